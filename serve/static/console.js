// kefu-router review console: keyboard review of the queue (no library, no build step).
// Up/Down: item; Left/Right: head; 1-9: label of the active head (toggles a customer type);
// Enter: save the item through POST /console/feedback; P: playbook; Esc: back to the item.
"use strict";
(function () {
  const agent = document.getElementById("agent-id");
  if (!agent) return;
  const stored = window.localStorage && localStorage.getItem("kefu-agent-id");
  if (stored && agent.value === "console") agent.value = stored;
  agent.addEventListener("change", function () { localStorage.setItem("kefu-agent-id", agent.value.trim()); });

  let activeHead = 0;
  const items = function () { return Array.from(document.querySelectorAll("article.item")); };
  const heads = function (item) { return Array.from(item.querySelectorAll("fieldset.head")); };

  function setHead(item, index) {
    const all = heads(item);
    if (!all.length) return;
    activeHead = (index + all.length) % all.length;
    all.forEach(function (h, k) { h.classList.toggle("active", k === activeHead); });
  }

  function focusItem(item, scroll) {
    if (!item) return;
    items().forEach(function (other) { if (other !== item) heads(other).forEach(function (h) { h.classList.remove("active"); }); });
    item.focus({ preventScroll: true });
    if (scroll !== false) item.scrollIntoView({ block: "nearest" });
    setHead(item, 0);
  }

  function move(item, step) {
    const all = items();
    focusItem(all[all.indexOf(item) + step]);
  }

  function choose(item, n) {
    const head = heads(item)[activeHead];
    const inputs = head ? head.querySelectorAll("input") : [];
    if (n >= inputs.length) return;
    const input = inputs[n];
    input.checked = input.type === "radio" ? true : !input.checked;
  }

  function newKey() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return "console-" + Array.from(bytes, function (b) { return b.toString(16).padStart(2, "0"); }).join("");
  }

  function changes(item, body) {
    const out = [];
    heads(item).forEach(function (head) {
      const name = head.dataset.head;
      const predicted = Array.from(head.querySelectorAll("label.predicted input"), function (i) { return i.value; });
      const now = Array.isArray(body[name]) ? body[name] : [body[name]];
      if (predicted.join(",") !== now.join(",")) out.push(name + " " + (predicted.join("+") || "无") + "→" + (now.join("+") || "无"));
    });
    if (body.playbook) out.push("playbook " + item.dataset.playbook + "→" + body.playbook);
    return out;
  }

  function say(item, text, bad) {
    const status = item.querySelector(".status");
    status.textContent = text;
    status.classList.toggle("bad", !!bad);
  }

  function detail(data) {
    if (typeof data.detail === "string") return data.detail;
    if (Array.isArray(data.detail)) return data.detail.map(function (e) { return (e.loc || []).join(".") + ": " + e.msg; }).join("; ");
    return "";
  }

  function submit(item) {
    if (item.dataset.busy) return;
    const body = { prediction_id: item.dataset.id, agent_id: agent.value.trim() };
    if (!body.agent_id) { say(item, "请先填写审核人 ID (agent_id)", true); agent.focus(); return; }
    heads(item).forEach(function (head) {
      const checked = Array.from(head.querySelectorAll("input:checked"), function (i) { return i.value; });
      body[head.dataset.head] = head.dataset.head === "customer_type" ? checked : checked[0];
    });
    const pick = item.querySelector("select.playbook");
    if (pick && pick.value !== item.dataset.playbook) body.playbook = pick.value;
    const payload = JSON.stringify(body);
    if (item.dataset.payload !== payload) { item.dataset.payload = payload; item.dataset.key = newKey(); }
    body.idempotency_key = item.dataset.key;  // a retry of the same action reuses its key
    item.dataset.busy = "1";
    say(item, "保存中… saving");
    fetch("/console/feedback", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json" }, body: JSON.stringify(body),
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (r.status !== 201) { say(item, "未保存 not saved (" + r.status + "): " + detail(data), true); return; }
        const fixed = changes(item, body);
        say(item, "已保存 #" + data.feedback_id + "：" + (fixed.length ? "更正 " + fixed.join("，") : "确认 confirmed"));
        if (!item.classList.contains("done")) {
          item.classList.add("done");
          const reviewed = document.getElementById("reviewed"), remaining = document.getElementById("remaining");
          reviewed.textContent = Number(reviewed.textContent) + 1;
          remaining.textContent = Math.max(0, Number(remaining.textContent) - 1);
        }
        if (document.activeElement === item || item.contains(document.activeElement)) {
          const rest = items().slice(items().indexOf(item) + 1).filter(function (i) { return !i.classList.contains("done"); });
          if (rest.length) focusItem(rest[0]);
        }
      });
    }).catch(function () {
      say(item, "网络错误，按 Enter 重试 (network error: Enter retries with the same key)", true);
    }).finally(function () { delete item.dataset.busy; });
  }

  document.addEventListener("keydown", function (e) {
    const item = e.target.closest && e.target.closest("article.item");
    if (!item || e.altKey || e.ctrlKey || e.metaKey) return;
    const tag = e.target.tagName, type = e.target.type;
    if (tag === "SELECT" || tag === "A" || (tag === "INPUT" && type !== "radio" && type !== "checkbox")) {
      if (e.key === "Escape") { e.preventDefault(); item.focus(); }
      return;
    }
    let handled = true;
    if (e.key === "ArrowDown") move(item, 1);
    else if (e.key === "ArrowUp") move(item, -1);
    else if (e.key === "ArrowRight") setHead(item, activeHead + 1);
    else if (e.key === "ArrowLeft") setHead(item, activeHead - 1);
    else if (e.key === "Enter") submit(item);
    else if (e.key === "Escape") item.focus();
    else if (e.key === "p" || e.key === "P") { const pick = item.querySelector("select.playbook"); if (pick) pick.focus(); }
    else if (/^[1-9]$/.test(e.key)) choose(item, Number(e.key) - 1);
    else handled = false;
    if (handled) e.preventDefault();
  });

  document.addEventListener("click", function (e) {
    const button = e.target.closest("button.confirm");
    if (button) submit(button.closest("article.item"));
  });
  document.addEventListener("focusin", function (e) {
    const head = e.target.closest && e.target.closest("fieldset.head");
    if (head) setHead(head.closest("article.item"), heads(head.closest("article.item")).indexOf(head));
  });

  const first = items().filter(function (i) { return !i.classList.contains("done"); })[0];
  if (first) focusItem(first, false);  // ready for the keyboard, page not scrolled
})();
