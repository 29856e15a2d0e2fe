// Login page: offer the challenge to the local agent, forward its answer, poll until done.
"use strict";
(function () {
  const cfg = JSON.parse(document.getElementById("login-config").textContent);
  const base = "/login/" + encodeURIComponent(cfg.txn);
  let polling = null;

  function show(name) {
    document.querySelectorAll(".state").forEach(function (el) { el.classList.remove("active"); });
    document.getElementById("state-" + name).classList.add("active");
  }

  async function postJSON(url, body) {
    const resp = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: body === undefined ? "{}" : body,
      credentials: "same-origin",
    });
    return { ok: resp.ok, status: resp.status, body: await resp.json().catch(function () { return {}; }) };
  }

  async function offerToAgent(port, challenge) {
    const ctl = new AbortController();
    const timer = setTimeout(function () { ctl.abort(); }, 4000);
    try {
      const resp = await fetch("http://127.0.0.1:" + port + "/v1/challenge", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ challenge: challenge }),
        signal: ctl.signal,
      });
      const body = await resp.json().catch(function () { return {}; });
      return { answered: true, ok: resp.ok, body: body };
    } catch (e) {
      return { answered: false };
    } finally {
      clearTimeout(timer);
    }
  }

  function finish(status) {
    if (status && status.next) {
      window.location.assign(status.next);
      return true;
    }
    return false;
  }

  function poll() {
    if (polling) return;
    polling = setInterval(async function () {
      const resp = await fetch(base + "/status", { credentials: "same-origin" });
      const status = await resp.json().catch(function () { return {}; });
      if (finish(status)) { clearInterval(polling); polling = null; }
    }, 400);
  }

  async function run() {
    show("searching");
    const ch = await postJSON(base + "/challenge");
    if (!ch.ok) {
      if (ch.body && ch.body.error && ch.body.error.code === "login_closed") {
        const st = await fetch(base + "/status", { credentials: "same-origin" }).then(function (r) { return r.json(); });
        if (finish(st)) return;
      }
      showAgentError(ch.body.error || { message: "The sign-in service refused: " + ch.status });
      return;
    }
    for (const port of ch.body.ports) {
      const answer = await offerToAgent(port, ch.body.challenge);
      if (!answer.answered) continue;
      if (!answer.ok) {
        showAgentError(answer.body.error || { message: "The agent refused the challenge." });
        return;
      }
      show("waiting");
      poll();
      const res = await postJSON(base + "/response", answer.body.response);
      if (finish(res.body)) return;
      if (!res.ok && res.body.error) { showAgentError(res.body.error); }
      return;
    }
    show("no-agent");
  }

  function showAgentError(err) {
    document.getElementById("agent-error-message").textContent = err.message || "The agent could not answer.";
    document.getElementById("agent-error-hint").textContent = err.hint || "";
    show("agent-error");
  }

  document.getElementById("retry").addEventListener("click", run);
  document.getElementById("retry2").addEventListener("click", run);
  run();
})();
