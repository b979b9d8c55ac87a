// Flash messages: shown as they arrive on the user's topic and, until acknowledged, again on
// every page view. A message is acknowledged only once it has been on screen for a moment (or
// the user dismissed or followed it), so one that arrives as the student clicks away is kept;
// a dialog only once its button or link is pressed.
(function () {
  const ACK_AFTER_MS = 1500;
  const area = document.getElementById("flash-area");
  if (!area || !window.submissionsLive) return;
  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const shown = new Set();

  function acknowledge(message, keepalive = false) {
    if (message.acked) return;
    message.acked = true;
    // keepalive lets the request finish when the acknowledgement is a click on a link away.
    fetch(`/api/v1/flash/${message.id}/ack`, {
      method: "POST", credentials: "same-origin", keepalive,
      headers: { "X-CSRFToken": csrfToken },
    }).then((response) => { if (!response.ok) message.acked = false; })
      .catch(() => { message.acked = false; });
  }

  function dismiss(box, message) {
    acknowledge(message);
    if (box.open) box.close();
    box.remove();
  }

  function build(message) {
    const box = document.createElement(message.modal ? "dialog" : "div");
    box.className = `flash ${message.level}${message.modal ? " flash-modal" : ""}`;
    box.dataset.flashId = message.id;
    box.setAttribute("role", message.level === "error" ? "alert" : "status");
    const text = document.createElement("p");
    text.className = "flash-text";
    text.textContent = message.text;
    const actions = document.createElement("div");
    actions.className = "flash-actions";
    if (message.link_url) {
      const link = document.createElement("a");
      link.href = message.link_url;
      link.textContent = message.link_text || "Open";
      link.addEventListener("click", () => acknowledge(message, true));
      actions.append(link);
    }
    if (message.button_text || message.modal) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "flash-button";
      button.textContent = message.button_text || "OK";
      button.addEventListener("click", () => dismiss(box, message));
      actions.append(button);
    }
    if (!message.modal) {
      const close = document.createElement("button");
      close.type = "button";
      close.className = "flash-close";
      close.setAttribute("aria-label", "Dismiss");
      close.textContent = "×";
      close.addEventListener("click", () => dismiss(box, message));
      box.append(close);
    }
    box.append(text);
    if (actions.childElementCount) box.append(actions);
    if (message.modal) {
      // A dialog asks to be pressed: Escape does not close it, and nor does the browser's
      // own close on a repeated Escape (it is shown again until its button is pressed).
      box.addEventListener("cancel", (event) => event.preventDefault());
      box.addEventListener("close", () => { if (!message.acked && box.isConnected) box.showModal(); });
    }
    return box;
  }

  function acknowledgeWhenSeen(box, message) {
    const hideMs = message.hide_after ? message.hide_after * 1000 : null;
    const ackMs = hideMs ? Math.min(ACK_AFTER_MS, hideMs) : ACK_AFTER_MS;
    let inView = false;
    let ackTimer = null;
    let hideTimer = null;
    const observer = new IntersectionObserver((entries) => {
      inView = entries[entries.length - 1].isIntersecting;
      update();
    }, { threshold: 0.5 });

    function stop() {
      observer.disconnect();
      document.removeEventListener("visibilitychange", update);
    }

    function update() {
      if (message.acked || !box.isConnected) { clearTimeout(ackTimer); stop(); return; }
      const onScreen = inView && document.visibilityState === "visible";
      if (onScreen && !ackTimer) ackTimer = setTimeout(() => { acknowledge(message); stop(); }, ackMs);
      if (!onScreen && ackTimer) { clearTimeout(ackTimer); ackTimer = null; }
      if (onScreen && hideMs && !hideTimer) hideTimer = setTimeout(() => dismiss(box, message), hideMs);
    }

    document.addEventListener("visibilitychange", update);
    observer.observe(box);
  }

  function show(message) {
    if (shown.has(message.id)) return;
    shown.add(message.id);
    const box = build(message);
    if (message.modal) {
      document.body.append(box);
      box.showModal();
    } else {
      area.append(box);
    }
    // A dialog is acknowledged by pressing it, never merely by being seen.
    if (!message.modal) acknowledgeWhenSeen(box, message);
  }

  const pending = document.getElementById("pending-flashes");
  if (pending) JSON.parse(pending.textContent).forEach(show);
  window.submissionsLive.on("flash", show);
})();
