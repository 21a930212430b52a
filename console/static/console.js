// citystream console: the live feed over server-sent events, and alert actions. No build step.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function text(tag, cls, value) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  el.textContent = value;
  return el;
}

function renderItem(item, labels, prefix) {
  const li = document.createElement("li");
  li.id = prefix + item.id;
  li.dataset.at = item.at;
  li.dataset.kind = item.kind;
  li.className = "item " + item.kind + (item.hit ? " hit" : "") + (item.severity ? " " + item.severity : "");
  li.appendChild(text("time", "", item.at.replace("T", " ").slice(0, 19) + " UTC"));
  li.appendChild(text("span", "kind", labels.dataset[item.kind] || item.kind));
  li.appendChild(text("span", "where", item.device + (item.district ? " · " + item.district : "")));
  if (item.kind === "plate") li.appendChild(text("span", "pseudonym", item.pseudonym));
  if (item.plate_text) li.appendChild(text("strong", "plate-text", item.plate_text));
  if (item.label) li.appendChild(text("span", "label", item.label));
  if (item.kind === "face") li.appendChild(text("span", "distance", "d=" + item.distance));
  if (item.kind === "alert") {
    li.appendChild(text("span", "message", item.message));
    if (item.acked_by) li.appendChild(text("span", "acked", labels.dataset.acked + ": " + item.acked_by));
    if (item.closed_by) li.appendChild(text("span", "closed", labels.dataset.closed + ": " + item.closed_by));
    if (item.can_act && !item.closed_by) {
      if (!item.acked_by) li.appendChild(actionButton(item, "ack", labels.dataset.ack));
      li.appendChild(actionButton(item, "close", labels.dataset.close));
    }
  }
  if (item.frame) {
    const a = document.createElement("a");
    a.href = item.frame;
    a.className = "frame";
    a.textContent = "▣";
    li.appendChild(a);
  }
  return li;
}

function actionButton(item, action, caption) {
  const button = text("button", "act " + action, caption);
  button.type = "button";
  button.addEventListener("click", async () => {
    button.disabled = true;
    const response = await fetch("/alerts/" + item.id + "/" + action, {
      method: "POST", headers: {"X-CSRF-Token": csrfToken()}, credentials: "same-origin"});
    if (!response.ok) {
      button.disabled = false;
      const body = await response.json().catch(() => ({error: response.statusText}));
      button.title = body.error || response.statusText;
      button.classList.add("failed");
    }
  });
  return button;
}

function upsert(list, item, labels, prefix) {
  const row = renderItem(item, labels, prefix);
  const old = document.getElementById(row.id);
  if (old) {
    old.replaceWith(row);
    return;
  }
  for (const other of list.children) {  // newest first, by event time
    if (other.dataset.at < item.at) {
      list.insertBefore(row, other);
      return;
    }
  }
  list.appendChild(row);
}

function startFeed() {
  const list = document.getElementById("feed");
  if (!list) return;
  const labels = document.getElementById("labels");
  const state = document.getElementById("feed-state");
  const source = new EventSource("/events");
  source.addEventListener("open", () => { state.textContent = state.dataset.live; state.className = "live"; });
  source.addEventListener("error", () => { state.textContent = state.dataset.connecting; state.className = ""; });
  const open = document.getElementById("open-alerts");
  source.addEventListener("item", (event) => {
    const item = JSON.parse(event.data);
    upsert(list, item, labels, "item-");
    while (list.children.length > 500) list.removeChild(list.lastChild);
    if (item.kind !== "alert") return;
    if (item.state === "raised" && !item.closed_by) {  // open alerts stay pinned above the feed until closed
      upsert(open, item, labels, "open-");
    } else {
      const pinned = document.getElementById("open-" + item.id);
      if (pinned) pinned.remove();
    }
    open.hidden = open.children.length === 0;
  });
}

document.addEventListener("DOMContentLoaded", startFeed);
