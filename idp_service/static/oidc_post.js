// Posts the OpenID Connect answer (code or id_token) to the application as soon as the page loads.
"use strict";
(function () {
  var form = document.getElementById("oidc-post");
  if (form && form.getAttribute("data-autosubmit") === "1") {
    form.submit();
  }
})();
