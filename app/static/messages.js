// Conversations, live: messages arrive, are pinned, unpinned and hidden on every open page of
// their course or assignment ("message" events), unread counts go up as others write and down
// as the user reads in another tab ("read" events), and the form posts without leaving the
// page. A message's html is the server's escaping of its text with only the links it made
// (app/messages/text.py): never HTML a user wrote.
(function () {
  if (!window.submissionsLive) return;
  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const me = Number(document.body.dataset.userId);
  const section = document.getElementById("discussion");
  const READ_AFTER_MS = 500;

  function send(url, method, body) {
    return fetch(url, {
      method, credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken, "Content-Type": "application/json", Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  // --- unread counts ------------------------------------------------------------------------

  function badgesFor(message) {
    return [...document.querySelectorAll("[data-unread-for]")].filter((el) => {
      const key = el.dataset.unreadFor;
      return message.conversation === key
        || (el.dataset.threads === "true" && message.conversation.startsWith(`${key}.`));
    });
  }

  function showCount(el, count) {
    el.dataset.unread = String(count);
    el.hidden = count <= 0;
    el.querySelector(".badge").textContent = `${count} new`;
  }

  // The ids of messages each badge counted live, so a recount drawn before one of them was
  // stored does not lose it.
  const countedLive = new WeakMap();
  function countLive(el, message) {
    if (!countedLive.has(el)) countedLive.set(el, new Set());
    countedLive.get(el).add(message.id);
    showCount(el, Number(el.dataset.unread || 0) + 1);
  }

  let recountTimer = null;
  // A hidden message may or may not have been counted, and a read one no longer is: ask the
  // page again, a moment later (spread out, so every open page does not ask at once). The
  // page is asked for its counts only (recount=1), so fetching it marks nothing read.
  function recount() {
    if (recountTimer) return;
    recountTimer = setTimeout(async () => {
      recountTimer = null;
      const url = new URL(window.location.href);
      url.searchParams.set("recount", "1");
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok || response.redirected) return;  // logged out: the login page
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      document.querySelectorAll("[data-unread-for]").forEach((el) => {
        const selector = `[data-unread-for="${CSS.escape(el.dataset.unreadFor)}"]`;
        const now = fresh.querySelector(selector);
        if (!now) return;
        const drawnUpto = Number(now.dataset.countedUpto || 0);
        const after = [...(countedLive.get(el) || [])].filter((id) => id > drawnUpto);
        countedLive.set(el, new Set(after));
        showCount(el, Number(now.dataset.unread) + after.length);
      });
    }, 300 + Math.random() * 1500);
  }

  // --- the conversation on this page ----------------------------------------------------------

  const list = section && document.getElementById("messages");
  const pinnedBox = section && document.getElementById("pinned");
  const timeFormat = section && new Intl.DateTimeFormat("en-GB", {
    timeZone: section.dataset.timezone, weekday: "short", day: "2-digit", month: "short",
    year: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
  });

  function isHere(message) {
    return section && message.conversation === section.dataset.conversation;
  }

  function timeOf(message) {
    const time = document.createElement("time");
    time.dateTime = message.created_at;
    time.textContent = timeFormat.format(new Date(message.created_at)).replace(/,(?=[^,]*$)/, "");
    return time;
  }

  function moderationForm(message, actions) {
    const form = document.createElement("form");
    form.method = "post";
    form.className = "moderate";
    form.setAttribute("action", section.dataset.moderateUrl.replace(/\/0$/, `/${message.id}`));
    const token = document.createElement("input");
    token.type = "hidden";
    token.name = "csrf_token";
    token.value = csrfToken;
    form.append(token);
    actions.forEach(([action, label]) => {
      const button = document.createElement("button");
      button.type = "submit";
      button.name = "action";
      button.value = action;
      button.className = action === "hide" ? "small danger" : "small";
      button.textContent = label;
      form.append(button);
    });
    return form;
  }

  function build(message) {
    const item = document.createElement("li");
    item.className = message.author.id === me ? "message mine" : "message";
    item.id = `message-${message.id}`;
    item.dataset.messageId = message.id;
    const meta = document.createElement("p");
    meta.className = "message-meta";
    const author = document.createElement("span");
    author.className = "author";
    author.textContent = message.author.name;
    meta.append(author);
    if (message.author.staff) {
      const badge = document.createElement("span");
      badge.className = "badge staff";
      badge.textContent = "Staff";
      meta.append(" ", badge);
    }
    meta.append(" ", timeOf(message));
    const body = document.createElement("p");
    body.className = "message-body";
    body.innerHTML = message.html;
    item.append(meta, body);
    if (section.dataset.moderateUrl) {
      const actions = section.dataset.private === "true" ? [] : [["pin", "Pin"]];
      item.append(moderationForm(message, [...actions, ["hide", "Hide"]]));
    }
    return item;
  }

  function nearBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  }

  function add(message, scroll) {
    if (document.getElementById(`message-${message.id}`)) return;
    const items = [...list.children];
    const first = items.length ? Number(items[0].dataset.messageId) : null;
    // Older than what is shown, with older pages not loaded: it belongs to those.
    if (first !== null && message.id < first && document.getElementById("older-messages")) return;
    const stick = scroll || nearBottom();
    const later = items.find((item) => Number(item.dataset.messageId) > message.id);
    list.insertBefore(build(message), later || null);
    document.getElementById("no-messages").hidden = true;
    if (stick) list.scrollTop = list.scrollHeight;
  }

  function remove(message) {
    const item = document.getElementById(`message-${message.id}`);
    if (item) item.remove();
    document.getElementById("no-messages").hidden = list.children.length > 0;
    unpin(message);
  }

  function pin(message) {
    const label = document.createElement("p");
    label.className = "pinned-label";
    label.append(`Announcement · ${message.author.name}, `, timeOf(message));
    const body = document.createElement("p");
    body.className = "message-body";
    body.dataset.messageId = message.id;
    body.innerHTML = message.html;
    pinnedBox.replaceChildren(label, body);
    if (section.dataset.moderateUrl) pinnedBox.append(moderationForm(message, [["unpin", "Unpin"]]));
    pinnedBox.hidden = false;
  }

  function unpin(message) {
    const shown = pinnedBox.querySelector("[data-message-id]");
    if (shown && Number(shown.dataset.messageId) === message.id) {
      pinnedBox.replaceChildren();
      pinnedBox.hidden = true;
    }
  }

  // The newest message seen here is read; told to the server once the page is on screen.
  let readUpTo = 0;
  let toldUpTo = 0;
  let readTimer = null;
  function markRead(message) {
    readUpTo = Math.max(readUpTo, message.id);
    tellRead();
  }
  function tellNow(keepalive) {
    clearTimeout(readTimer);
    readTimer = null;
    if (readUpTo <= toldUpTo) return;
    const upTo = readUpTo;
    // keepalive lets the request finish when it is sent as the page is left.
    fetch(`/api/v1/messages/${upTo}/read`, {
      method: "POST", credentials: "same-origin", keepalive,
      headers: { "X-CSRFToken": csrfToken },
    }).then((response) => {
      if (response.ok) toldUpTo = Math.max(toldUpTo, upTo);
    }).catch(() => {});
  }
  function tellRead() {
    if (readTimer || readUpTo <= toldUpTo || document.visibilityState !== "visible") return;
    readTimer = setTimeout(() => tellNow(false), READ_AFTER_MS);
  }
  document.addEventListener("visibilitychange", tellRead);
  // Leaving straight after a message arrived: it was on screen, so it is read.
  window.addEventListener("pagehide", () => { if (readTimer) tellNow(true); });

  function apply(message) {
    if (message.hidden) remove(message);
    else if (message.change === "posted" || message.change === "shown") add(message, message.author.id === me);
    if (message.change === "pinned") pin(message);
    if (message.change === "unpinned") unpin(message);
  }

  window.submissionsLive.on("message", (message) => {
    const here = isHere(message) && !section.dataset.paged;
    if (here) {
      apply(message);
      if (message.change === "posted" && message.author.id !== me) markRead(message);
      return;
    }
    const badges = badgesFor(message);
    if (!badges.length) return;
    if (message.change === "posted" && message.author.id !== me) {
      // A replayed message the page was drawn with is counted already.
      badges.filter((el) => message.id > Number(el.dataset.countedUpto || 0))
        .forEach((el) => countLive(el, message));
    } else if (message.change === "hidden") {
      recount();
    }
  });

  // This user read a conversation, here or in another tab: its badges on this page count again.
  window.submissionsLive.on("read", (read) => {
    if (badgesFor(read).length) recount();
  });

  if (!section) return;
  list.scrollTop = list.scrollHeight;

  // --- posting, moderating, paging back ------------------------------------------------------

  const form = document.getElementById("compose");
  const text = document.getElementById("message-body");
  const error = document.getElementById("compose-error");
  const counter = document.getElementById("message-counter");
  const button = document.getElementById("send-message");
  const limit = Number(text.maxLength);
  const hint = counter.textContent;

  function showError(message) {
    error.textContent = message || "";
    error.hidden = !message;
  }

  text.addEventListener("input", () => {
    const left = limit - text.value.length;
    counter.textContent = left < 200 ? `${left} characters left` : hint;
  });

  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const pinBox = document.getElementById("pin-message");
    button.disabled = true;
    showError("");
    try {
      const response = await send(section.dataset.apiUrl, "POST",
        { body: text.value, pin: Boolean(pinBox && pinBox.checked) });
      const answer = await response.json();
      if (!response.ok) {
        showError(answer.error ? answer.error.message : "The message was not sent; please try again.");
        return;
      }
      text.value = "";
      counter.textContent = hint;
      if (pinBox) pinBox.checked = false;
      if (!section.dataset.paged) {
        add(answer, true);
        if (answer.pinned) pin(answer);
      }
    } catch (failure) {
      showError("The message was not sent: the connection failed. Please try again.");
    } finally {
      button.disabled = false;
    }
  });

  const CHANGES = { hide: { hidden: true }, pin: { pinned: true }, unpin: { pinned: false } };
  section.addEventListener("submit", async (event) => {
    const moderation = event.target.closest("form.moderate");
    if (!moderation || !event.submitter) return;
    event.preventDefault();
    // Not moderation.action: the form's buttons are named "action", which that would find.
    const id = moderation.getAttribute("action").split("/").pop();
    const response = await send(`/api/v1/messages/${id}`, "PATCH", CHANGES[event.submitter.value]);
    if (!response.ok) return;
    const message = await response.json();
    if (message.hidden) remove(message);
    else if (message.pinned) pin(message);
    else unpin(message);
  });

  const older = document.getElementById("older-messages");
  if (older) {
    older.addEventListener("click", async (event) => {
      event.preventDefault();
      const first = list.firstElementChild;
      const params = new URLSearchParams({ before: first ? first.dataset.messageId : "" });
      const response = await fetch(`${section.dataset.apiUrl}?${params}`, { credentials: "same-origin" });
      if (!response.ok) return;
      const page = await response.json();
      const height = list.scrollHeight;
      page.messages.reverse().forEach((message) => {
        if (!document.getElementById(`message-${message.id}`)) list.prepend(build(message));
      });
      list.scrollTop += list.scrollHeight - height;
      if (!page.has_older) older.parentElement.remove();
    });
  }
})();
