// Shared by the review pages: the page's data, calls to the REST API with the session's CSRF token, messages.
"use strict";
const PAGE = JSON.parse(document.getElementById("page-data").textContent);

async function api(method, path, body) {
  const options = { method, headers: { "X-CSRF-Token": PAGE.csrf }, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (response.status === 401) {
    window.location = "/login?next=" + encodeURIComponent(window.location.pathname);
    throw new Error("logged out");
  }
  const data = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error((data && data.detail) || response.statusText);
  return data;
}

function say(text, error = false) {
  const box = document.getElementById("messages");
  if (!box) return;
  const line = document.createElement("p");
  line.className = error ? "message error" : "message";
  line.textContent = text;
  box.replaceChildren(line);
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}
