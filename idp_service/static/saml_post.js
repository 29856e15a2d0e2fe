// Posts the SAML Response to the application's ACS as soon as the page loads.
"use strict";
(function () {
  var form = document.getElementById("saml-post");
  if (form && form.getAttribute("data-autosubmit") === "1") {
    form.submit();
  }
})();
