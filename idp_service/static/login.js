// Login page: offer the challenge to the local agent, forward its answer, poll until done.
"use strict";
(function () {
  const cfg = JSON.parse(document.getElementById("login-config").textContent);
  const base = "/login/" + encodeURIComponent(cfg.txn);
  let polling = null;
  // The verified answer reaches this page twice (the /status poll and the reply to its
  // own POST .../response): whichever comes first leaves the page, once, and nothing
  // afterwards starts a second navigation.
  let leaving = false;

  function leave(url) {
    if (leaving) return;
    leaving = true;
    if (polling) { clearInterval(polling); polling = null; }
    window.location.assign(url);
  }

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
    if (leaving) return true;
    if (enrollment.handlesStatus(status)) return true;
    // Denied for want of an upstream sign-in (re-verification): offer it, in this sign-in.
    const reverify = document.getElementById("state-reverify");
    if (reverify && status && status.status === "denied" &&
        (status.code === "reverify_required" || status.code === "reauth_reused")) {
      document.getElementById("reverify-message").textContent = status.message || "";
      show("reverify");
      return true;
    }
    if (status && status.next) {
      leave(status.next);
      return true;
    }
    return false;
  }

  function poll() {
    if (polling || leaving) return;
    polling = setInterval(async function () {
      if (leaving) return;
      const resp = await fetch(base + "/status", { credentials: "same-origin" });
      const status = await resp.json().catch(function () { return {}; });
      if (finish(status)) { clearInterval(polling); polling = null; }
    }, 400);
  }

  async function run() {
    if (leaving) return;
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
        if (enrollment.handlesError(answer.body.error, port)) return;
        showAgentError(answer.body.error || { message: "The agent refused the challenge." });
        return;
      }
      show("waiting");
      poll();
      const res = await postJSON(base + "/response", answer.body.response);
      if (finish(res.body)) return;  // nothing more when the poll left the page already
      if (!res.ok && res.body.error) {
        if (enrollment.handlesError(res.body.error, port)) return;
        showAgentError(res.body.error);
      }
      return;
    }
    show("no-agent");
  }

  function showAgentError(err) {
    document.getElementById("agent-error-message").textContent = err.message || "The agent could not answer.";
    document.getElementById("agent-error-hint").textContent = err.hint || "";
    show("agent-error");
  }

  // ---- Enrollment and waiting for approval ------------------------------------------
  // Devices that are not (yet) trusted. When the agent is not enrolled (not_enrolled)
  // or this service does not know the device (device_unknown), ask for the enrollment
  // code from IT, or, when an identity broker vouched for the user, offer to register
  // without one; have the local agent enroll itself (POST /v1/enroll), then sign in
  // again. The code goes only to the agent on this computer, which seals it into its
  // answer to the service. A device waiting for approval (device_pending) gets a
  // "waiting for approval" state that can check again without starting over.
  const enrollment = (function () {
    let agentPort = null;
    let checkedOnce = false;
    let tofuMode = "tofu"; // "upstream" after a sign-in at the organization's identity provider

    function stopPolling() {
      if (polling) { clearInterval(polling); polling = null; }
    }

    // What the person at this page can do (the service's own hints are written for any reader).
    const HINTS = {
      enroll_code_invalid: "Check the code and type it again, or ask IT for a new one.",
      enroll_code_used: "Each code works once. Ask IT for a new one.",
      enroll_code_expired: "Ask IT for a new code.",
    };

    function setError(err) {
      const hint = err ? (HINTS[err.code] || err.hint || "") : "";
      document.getElementById("enroll-error").textContent = err ? (err.message || "Enrollment failed.") : "";
      document.getElementById("enroll-error-hint").textContent = hint;
    }

    async function offer(reason, port, enrollHere) {
      stopPolling();
      agentPort = port;
      if (!enrollHere) { show("enroll-terminal"); return; }
      document.getElementById("enroll-intro").textContent = reason === "device_unknown"
        ? "This sign-in service does not know this device (it may have been removed). Enroll it again to continue."
        : "This device is not enrolled yet. Enroll it to continue.";
      setError(null);
      document.getElementById("enroll-tofu").hidden = true;
      document.getElementById("enroll-upstream").hidden = false;
      show("enroll");
      document.getElementById("enroll-code").focus();
      const resp = await fetch(base + "/enroll-options", { credentials: "same-origin" });
      const options = await resp.json().catch(function () { return {}; });
      if (resp.ok && options.tofu && options.tofu.user) {
        tofuMode = options.tofu.mode === "upstream" ? "upstream" : "tofu";
        document.getElementById("enroll-tofu-user").textContent = options.tofu.user;
        document.getElementById("enroll-tofu").hidden = false;
        document.getElementById("enroll-upstream").hidden = true;
      }
    }

    async function agentEnroll(challenge, code) {
      const ctl = new AbortController();
      const timer = setTimeout(function () { ctl.abort(); }, 30000);
      try {
        const body = code === null ? { challenge: challenge } : { challenge: challenge, code: code };
        const resp = await fetch("http://127.0.0.1:" + agentPort + "/v1/enroll", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(body),
          signal: ctl.signal,
        });
        return { ok: resp.ok, status: resp.status, body: await resp.json().catch(function () { return {}; }) };
      } catch (e) {
        return { ok: false, status: 0, body: { error: {
          message: "The devicetrust agent on this computer did not answer.",
          hint: "Make sure it is running, then try again.",
        } } };
      } finally {
        clearTimeout(timer);
      }
    }

    async function enroll(mode) {
      const input = document.getElementById("enroll-code");
      const code = mode === "code" ? input.value.trim() : null;
      if (mode === "code" && !code) {
        setError({ message: "Enter the enrollment code from IT." });
        input.focus();
        return;
      }
      setError(null);
      show("enrolling");
      const ch = await postJSON(base + "/register-challenge", JSON.stringify({ mode: mode }));
      let result = ch;
      if (ch.ok) result = await agentEnroll(ch.body.challenge, code);
      if (!result.ok) {
        const err = (result.body && result.body.error) || { message: "Enrollment failed (" + result.status + ")." };
        if (err.code === "login_closed") { run(); return; }
        setError(err);
        show("enroll");
        input.focus();
        input.select();
        return;
      }
      input.value = "";
      run();
    }

    function pending(status) {
      stopPolling();
      if (status && status.approve) {
        // A trusted device of this user got a code: ask for it on its own page.
        leave(status.approve);
        return;
      }
      const note = document.getElementById("pending-note");
      note.textContent = checkedOnce
        ? "Checked at " + new Date().toLocaleTimeString() + ": still waiting for approval."
        : "";
      show("pending");
    }

    async function checkAgain() {
      checkedOnce = true;
      const btn = document.getElementById("pending-check");
      btn.disabled = true;
      try {
        await fetch(base + "/check-again", {
          method: "POST",
          headers: { "Accept": "application/json" },
          credentials: "same-origin",
        });
      } finally {
        btn.disabled = false;
      }
      run();
    }

    document.getElementById("enroll-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      enroll("code");
    });
    document.getElementById("enroll-tofu-button").addEventListener("click", function () { enroll(tofuMode); });
    document.getElementById("enroll-terminal-retry").addEventListener("click", run);
    document.getElementById("pending-check").addEventListener("click", checkAgain);
    document.getElementById("pending-stop").setAttribute("href", base + "/continue");

    return {
      // An error from the agent or the service: true when this section took over the page.
      handlesError: function (err, port) {
        if (!err) return false;
        if (err.code === "not_enrolled") { offer(err.code, port, err.enroll_here === true); return true; }
        if (err.code === "device_unknown") { offer(err.code, port, true); return true; }
        if (err.code === "device_pending") {
          fetch(base + "/status", { credentials: "same-origin" })
            .then(function (r) { return r.json(); })
            .then(pending, function () { pending(); });
          return true;
        }
        return false;
      },
      // A transaction status: waiting for approval is not the end of this sign-in.
      handlesStatus: function (status) {
        if (status && status.status === "denied" && status.code === "device_pending") {
          pending(status);
          return true;
        }
        return false;
      },
    };
  })();
  // ---- end of enrollment and waiting for approval ------------------------------------

  document.getElementById("retry").addEventListener("click", run);
  document.getElementById("retry2").addEventListener("click", run);
  run();
})();
