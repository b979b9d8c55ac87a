// One event stream per page: the topics the page names with data-live-topic (the body names
// the user's own), resumed from the event the page was drawn at, so nothing is missed.
// Other scripts listen with window.submissionsLive.on(type, handler).
(function () {
  const SEEN_KEPT = 2000;
  const OFFLINE_AFTER_MS = 1000;
  const handlers = {};
  const seen = new Set();
  let lastEventId = document.body.dataset.lastEventId || "";
  let source = null;

  window.submissionsLive = {
    on(type, handler) {
      if (!handlers[type]) {
        handlers[type] = [];
        if (source) source.addEventListener(type, dispatch);
      }
      handlers[type].push(handler);
    },
  };
  let retryMs = 1000;
  let offlineTimer = null;

  function topics() {
    return [...document.querySelectorAll("[data-live-topic]")].map((el) => el.dataset.liveTopic);
  }

  function streamUrl() {
    const params = new URLSearchParams();
    topics().forEach((topic) => params.append("topic", topic));
    if (lastEventId) params.set("last_event_id", lastEventId);
    return `/events?${params}`;
  }

  function setOnline(online) {
    const banner = document.getElementById("connection");
    clearTimeout(offlineTimer);
    if (online) { banner.hidden = true; return; }
    // A blip while the browser reconnects by itself is not worth a banner.
    offlineTimer = setTimeout(() => { banner.hidden = false; }, OFFLINE_AFTER_MS);
  }

  function dispatch(event) {
    if (event.lastEventId) {
      if (seen.has(event.lastEventId)) return;
      seen.add(event.lastEventId);
      if (seen.size > SEEN_KEPT) seen.delete(seen.values().next().value);
      lastEventId = event.lastEventId;
    }
    const data = JSON.parse(event.data);
    (handlers[event.type] || []).forEach((handler) => handler(data, event));
  }

  let retryTimer = null;
  function connect() {
    // One stream a page: a start again replaces the stream there was.
    clearTimeout(retryTimer);
    retryTimer = null;
    if (source) source.close();
    source = new EventSource(streamUrl());
    source.onopen = () => { retryMs = 1000; setOnline(true); };
    source.onerror = () => {
      setOnline(false);
      // EventSource retries network errors itself, but gives up on an HTTP error (a proxy's
      // 502 while the server restarts); then we start again, from the last event we had.
      if (source.readyState === EventSource.CLOSED && !retryTimer) {
        retryTimer = setTimeout(connect, retryMs);
        retryMs = Math.min(retryMs * 2, 30000);
      }
    };
    Object.keys(handlers).forEach((type) => source.addEventListener(type, dispatch));
  }

  function showSubmissionLive(receipt) {
    const submissionId = Number(receipt.dataset.submissionId);
    const stepList = document.getElementById("steps");
    const progress = document.getElementById("progress");
    const status = document.getElementById("submission-status");
    const detail = document.getElementById("submission-detail");

    function showProgress() {
      const steps = stepList.querySelectorAll("[data-status]");
      const done = [...steps].filter((s) => ["succeeded", "skipped"].includes(s.dataset.status)).length;
      progress.max = steps.length;
      progress.value = done;
      progress.textContent = `${done} of ${steps.length}`;
    }

    function showThumbnail() {
      const box = document.getElementById("thumbnail");
      const img = document.createElement("img");
      img.src = `${receipt.dataset.thumbnailUrl}?v=${Date.now()}`;
      img.alt = `Preview of ${receipt.dataset.filename}`;
      box.replaceChildren(img);
    }

    function showDownload() {
      if (status.classList.contains("rejected") || !receipt.dataset.downloadUrl) return;
      const link = document.createElement("a");
      link.href = receipt.dataset.downloadUrl;
      link.textContent = "download";
      document.getElementById("download").replaceChildren(" · ", link);
    }

    // Where a result will not come, say why instead of "not checked yet".
    function showMissing(id, text) {
      const note = document.createElement(id === "thumbnail" ? "p" : "span");
      note.className = "muted";
      note.textContent = text;
      document.getElementById(id).replaceChildren(note);
    }

    function showRejected() {
      progress.className = "rejected";
      const timing = document.getElementById("timing");
      timing.className = "badge rejected";
      timing.textContent = "Not accepted";
      document.getElementById("download").replaceChildren();
      document.getElementById("counts").textContent = "No: this file was not accepted";
      showMissing("similarity", "Not checked: the file was not accepted.");
      showMissing("thumbnail", "No preview: the file was not accepted.");
    }

    async function showSimilarity() {
      const response = await fetch(receipt.dataset.apiUrl, { credentials: "same-origin" });
      if (!response.ok) return;
      const submission = await response.json();
      if (submission.similarity !== null) {
        document.getElementById("similarity").textContent = `${submission.similarity}%`;
      }
    }

    window.submissionsLive.on("step", (step) => {
      if (step.submission_id !== submissionId) return;
      const item = document.getElementById(`step-${step.step}`);
      if (!item) return;
      item.className = `step ${step.status}`;
      item.dataset.status = step.status;
      item.querySelector(".step-status").textContent = step.status;
      item.querySelector(".step-detail").textContent = step.detail;
      // Only the course's staff are sent the raw error (the stream strips it for students).
      let error = item.querySelector(".step-error");
      if ("error" in step && step.error) {
        if (!error) {
          error = document.createElement("code");
          error.className = "step-error";
          item.querySelector(".step-detail").after(error);
        }
        error.textContent = step.error;
      } else if (error && "error" in step) {
        error.remove();
      }
      // Staff pages carry a requeue form per step, offered while the step is failed, unless
      // the file was not accepted: a rejection is final.
      const requeue = item.querySelector("form.requeue");
      if (requeue) requeue.hidden = step.status !== "failed" || status.classList.contains("rejected");
      showProgress();
      if (step.status === "succeeded" && step.step === "store") showDownload();
      if (step.status === "succeeded" && step.step === "thumbnail") showThumbnail();
      if (step.status === "succeeded" && step.step === "plagiarism") showSimilarity();
      if (["skipped", "failed"].includes(step.status) && !status.classList.contains("rejected")) {
        if (step.step === "plagiarism") showMissing("similarity", step.detail);
        if (step.step === "thumbnail") showMissing("thumbnail", step.detail);
      }
    });

    window.submissionsLive.on("submission", (submission) => {
      if (submission.submission_id !== submissionId) return;
      status.className = `status ${submission.status}`;
      status.textContent = submission.status.replace(/_/g, " ");
      detail.textContent = submission.detail;
      progress.className = submission.status;
      if (submission.status === "rejected") {
        showRejected();
        stepList.querySelectorAll("form.requeue").forEach((form) => { form.hidden = true; });
      }
    });

    window.submissionsLive.on("grade", (grade) => {
      if (grade.submission_id !== submissionId) return;
      if (grade.withdrawn) {
        // Staff keep seeing the mark they gave; the student no longer does.
        const box = document.getElementById("grade");
        if (box.dataset.staff) return;
        const note = document.createElement("p");
        note.className = "muted";
        note.textContent = "Not released yet.";
        box.replaceChildren(note);
        return;
      }
      const score = document.createElement("p");
      score.className = "score";
      score.textContent = `${Number(grade.score).toFixed(1)} / ${grade.max_score}`;
      const parts = [score];
      if (grade.feedback) {
        const feedback = document.createElement("p");
        feedback.className = "feedback";
        feedback.textContent = grade.feedback;
        parts.push(feedback);
      }
      document.getElementById("grade").replaceChildren(...parts);
    });
  }

  // The user's own account, changed in the student-records system ("profile" and "enrolment"
  // events on their topic): the header shows their new name, and a page that lists their
  // courses (data-redraw-on="enrolment") is drawn again with the courses they now have, its
  // stream then following the topics of the page as it now is.
  window.submissionsLive.on("profile", (profile) => {
    const who = document.querySelector("header .who");
    if (who) who.textContent = profile.name || profile.email;
  });

  let redrawing = Promise.resolve();
  async function redraw() {
    const response = await fetch(window.location.pathname, { credentials: "same-origin" });
    if (!response.ok || response.redirected) return;  // logged out: the login page
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    const freshMain = fresh.getElementById("main");
    const freshNav = fresh.querySelector("header.top nav");
    const nav = document.querySelector("header.top nav");
    if (!freshMain) return;
    document.getElementById("main").replaceChildren(...freshMain.childNodes);
    if (nav && freshNav) nav.replaceWith(freshNav);
    if (!source) return;
    // The new topics start where the new page was drawn from, if that is earlier than the
    // stream had come: an event on them still being stored then is not missed (and one seen
    // already is not shown twice).
    const drawnFrom = fresh.body.dataset.lastEventId;
    if (drawnFrom && (!lastEventId || Number(drawnFrom) < Number(lastEventId))) {
      lastEventId = drawnFrom;
    }
    connect();
  }
  // A page of a course the user was just removed from stays on screen, but says so and takes
  // no more input: what it would send is refused now.
  function showRemoved(enrolment) {
    if (enrolment.role || document.getElementById("unenrolled")) return;
    if (!document.querySelector(`[data-course-page="${Number(enrolment.course_id)}"]`)) return;
    const main = document.getElementById("main");
    const notice = document.createElement("p");
    notice.id = "unenrolled";
    notice.className = "notice warning";
    notice.setAttribute("role", "status");
    notice.textContent = `You are no longer enrolled in ${enrolment.course}: `
      + "this page stays as it was, but nothing can be sent from it.";
    main.prepend(notice);
    main.querySelectorAll("form input, form button, form textarea, form select")
      .forEach((el) => { el.disabled = true; });
  }

  window.submissionsLive.on("enrolment", (enrolment) => {
    showRemoved(enrolment);
    if (!document.querySelector('[data-redraw-on~="enrolment"]')) return;
    // One redraw at a time; changes that arrive meanwhile are in the next one.
    redrawing = redrawing.then(redraw).catch(() => {});
  });

  document.addEventListener("DOMContentLoaded", () => {
    if (!document.body.dataset.userId || !window.EventSource) return;
    const receipt = document.getElementById("receipt");
    if (receipt && receipt.dataset.liveTopic) showSubmissionLive(receipt);
    connect();
  });
})();
