// The payment form with a Stripe key: Stripe Elements collects the card, and the form posts the
// token Stripe makes, never the card number. (Not browser-tested here: it needs Stripe's servers.)
(function () {
  "use strict";
  var form = document.getElementById("payment-form");
  if (!form || typeof Stripe === "undefined") return;
  var stripe = Stripe(form.getAttribute("data-stripe-key"));
  var card = stripe.elements().create("card");
  card.mount("#card-element");
  form.addEventListener("submit", function (event) {
    var token = document.getElementById("token");
    if (token.value) return;
    event.preventDefault();
    stripe.createToken(card).then(function (result) {
      if (result.error) {
        var p = document.getElementById("card_number-error") || document.createElement("p");
        p.id = "card_number-error";
        p.className = "field-error";
        p.textContent = result.error.message;
        document.getElementById("card-element").after(p);
        return;
      }
      token.value = result.token.id;
      form.submit();
    });
  });
})();
