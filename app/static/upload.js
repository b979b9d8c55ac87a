// The time left before the due time, kept current while the page is open (as time_left says it).
// The due time is read on every tick: an extension granted while the page is open moves it.
(function () {
  const countdown = document.getElementById("countdown");
  if (!countdown) return;
  function span(seconds) {
    let minutes = Math.floor(seconds / 60);
    if (minutes < 1) return "less than a minute";
    const parts = [];
    for (const [unit, size] of [["day", 1440], ["hour", 60], ["minute", 1]]) {
      const count = Math.floor(minutes / size);
      minutes %= size;
      if (count) parts.push(`${count} ${unit}${count === 1 ? "" : "s"}`);
    }
    return parts.slice(0, 2).join(" ");
  }
  function show() {
    const seconds = (Date.parse(countdown.dataset.due) - Date.now()) / 1000;
    countdown.textContent = seconds > 0 ? `Due in ${span(seconds)}` : `The due time passed ${span(-seconds)} ago`;
    countdown.classList.toggle("passed", seconds <= 0);
  }
  setInterval(show, 30000);
  countdown.addEventListener("deadline-changed", show);
})();

// An extension granted or withdrawn while the page is open (a "deadline" event on the
// student's own topic): the deadline, the countdown and, when it changes, whether and how
// the student can submit are drawn again from the page the server renders now.
(function () {
  const facts = document.getElementById("deadline");
  if (!facts || !window.submissionsLive || !window.DOMParser) return;
  const assignmentId = Number(facts.dataset.assignmentId);

  async function redraw() {
    const response = await fetch(window.location.pathname, { credentials: "same-origin" });
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    document.getElementById("deadline").replaceWith(fresh.getElementById("deadline"));
    const countdown = document.getElementById("countdown");
    const freshCountdown = fresh.getElementById("countdown");
    countdown.dataset.due = freshCountdown.dataset.due;
    countdown.className = freshCountdown.className;
    countdown.dispatchEvent(new Event("deadline-changed"));
    const submit = document.getElementById("submit");
    const freshSubmit = fresh.getElementById("submit");
    if (!submit || !freshSubmit || submit.dataset.state === freshSubmit.dataset.state) return;
    // Keep a file the student had already chosen.
    const chosen = submit.querySelector("#file");
    const files = chosen && chosen.files.length ? chosen.files : null;
    submit.replaceWith(freshSubmit);
    const input = freshSubmit.querySelector("#file");
    if (files && input) input.files = files;
  }

  window.submissionsLive.on("deadline", (deadline) => {
    if (deadline.assignment_id === assignmentId) redraw();
  });
})();

// Sends the upload in the background so a busy server (503) or a rate limit (429) is retried
// with the same idempotency key, instead of asking the student to try again. Listened for on
// the document: an extension can bring the form onto the page after it loaded.
(function () {
  const MAX_ATTEMPTS = 8;

  function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

  function delayFor(response, attempt) {
    const header = Number(response.headers.get("Retry-After"));
    const backoff = Math.min(30000, 1000 * 2 ** attempt) * (0.5 + Math.random());
    return header > 0 ? Math.max(header * 1000, backoff / 2) : backoff;
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (form.id !== "upload-form" || !window.fetch || !window.FormData) return;
    const status = document.getElementById("upload-status");
    const button = document.getElementById("upload-button");
    event.preventDefault();
    if (!form.file.files.length) { status.textContent = "Choose a file to upload."; return; }
    button.disabled = true;
    const body = new FormData(form);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      status.textContent = attempt ? `Server busy; trying again (attempt ${attempt + 1})…` : "Uploading…";
      let response;
      try {
        response = await fetch(form.action || window.location.href, {
          method: "POST", body, credentials: "same-origin",
        });
      } catch (err) {
        status.textContent = "Connection lost; retrying…";
        await sleep(Math.min(30000, 1000 * 2 ** attempt));
        continue;
      }
      if (response.redirected) { window.location.assign(response.url); return; }
      if (response.status === 503 || response.status === 429) {
        const wait = delayFor(response, attempt);
        status.textContent = `The server is busy; your upload will be retried in ${Math.ceil(wait / 1000)} s. Keep this page open.`;
        await sleep(wait);
        continue;
      }
      const html = await response.text();
      document.open(); document.write(html); document.close();
      return;
    }
    button.disabled = false;
    status.textContent = "The server is still busy. Your file was not submitted yet; please press Submit again.";
  });
})();
