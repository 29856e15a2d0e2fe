// Posture page: "Recheck now" asks the local agent to collect and report at once,
// then reloads the page so the service evaluates the fresh facts.
"use strict";
(function () {
  const cfg = JSON.parse(document.getElementById("posture-config").textContent);
  const status = document.getElementById("recheck-status");
  const button = document.getElementById("recheck");

  async function recheck() {
    button.disabled = true;
    status.textContent = "Asking this device for a fresh report…";
    for (const port of cfg.ports) {
      try {
        const resp = await fetch("http://127.0.0.1:" + port + "/v1/recheck", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: "{}",
        });
        const body = await resp.json().catch(function () { return {}; });
        if (resp.ok) {
          status.textContent = "Report received. Checking again…";
          window.location.assign("/login/" + encodeURIComponent(cfg.txn) + "/continue");
          return;
        }
        status.textContent = (body.error && body.error.message) || "The agent could not report.";
        button.disabled = false;
        return;
      } catch (e) {
        // Nothing listens on this port; try the next one.
      }
    }
    status.textContent = "The devicetrust agent is not running on this computer. Start it, then try again.";
    button.disabled = false;
  }

  button.addEventListener("click", recheck);
})();
