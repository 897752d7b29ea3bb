// The status page: asks for a diag key, keeps it in sessionStorage (this tab only), and swaps in
// the server-rendered panel every few seconds. No framework, no CDN: the gateway serves all of it.
(() => {
  "use strict";
  const KEY = "meter-gateway.key";
  const METER = "meter-gateway.meter";
  const CHANNEL = "meter-gateway.channel";
  const every = Math.max(1, Number(document.body.dataset.refresh) || 5) * 1000;
  const panel = document.getElementById("panel");
  const form = document.getElementById("key-form");
  const input = document.getElementById("key");
  const keyError = document.getElementById("key-error");
  const updated = document.getElementById("updated");
  const forget = document.getElementById("forget");
  let timer = null;

  function askForKey(message) {
    panel.replaceChildren();
    form.hidden = false;
    forget.hidden = true;
    keyError.hidden = !message;
    keyError.textContent = message || "";
    updated.textContent = "waiting for a key";
    input.focus();
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, every);
  }

  async function refresh() {
    const key = sessionStorage.getItem(KEY);
    if (!key) { askForKey(""); return; }
    const query = new URLSearchParams();
    const meter = sessionStorage.getItem(METER);
    const channel = sessionStorage.getItem(CHANNEL);
    if (meter) query.set("meter", meter);
    if (channel) query.set("channel", channel);
    try {
      const resp = await fetch("/status/panel?" + query, {
        headers: { Authorization: "Bearer " + key }, cache: "no-store",
      });
      if (resp.status === 401 || resp.status === 403) {
        const body = await resp.json().catch(() => ({}));
        sessionStorage.removeItem(KEY);
        askForKey(body.message || "the key was refused");
        return;
      }
      if (!resp.ok) {
        const body = await resp.json().catch(() => ({}));
        updated.textContent = "could not refresh (" + resp.status + "): " + (body.message || resp.statusText);
        updated.className = "error";
      } else {
        panel.innerHTML = await resp.text();  // rendered by the gateway with autoescaping
        form.hidden = true;
        forget.hidden = false;
        updated.textContent = "updated " + new Date().toLocaleTimeString();
        updated.className = "muted";
      }
    } catch (err) {
      updated.textContent = "the gateway does not answer (" + err.message + "); retrying";
      updated.className = "error";
    }
    schedule();
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = input.value.trim();
    input.value = "";
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    refresh();
  });

  forget.addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    clearTimeout(timer);
    askForKey("");
  });

  panel.addEventListener("click", (ev) => {
    const tile = ev.target.closest("[data-meter].tile");
    if (tile) {
      sessionStorage.setItem(METER, tile.dataset.meter);
      sessionStorage.removeItem(CHANNEL);
      refresh();
      return;
    }
    const chip = ev.target.closest("[data-channel]");
    if (chip) {
      sessionStorage.setItem(CHANNEL, chip.dataset.channel);
      refresh();
    }
  });

  refresh();
})();
