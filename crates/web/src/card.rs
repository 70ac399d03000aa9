//! Sandbox payments: without a Stripe key nothing leaves the machine, so the payment form takes
//! one of Stripe's public test card numbers and sends the test token Stripe would have made.

/// Stripe's public test cards and the tokens they stand for.
pub(crate) const TEST_CARDS: [(&str, &str); 2] = [
    ("4242424242424242", "tok_visa"),
    ("4000000000000002", "tok_chargeDeclined"),
];

/// The test token for a card number as a person types it (spaces and dashes allowed), or `None`
/// for a number that is not one of the test cards.
pub(crate) fn test_token(card_number: &str) -> Option<&'static str> {
    let digits: String = card_number
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .collect();
    TEST_CARDS
        .iter()
        .find(|(number, _)| *number == digits)
        .map(|(_, token)| *token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_test_numbers_map_to_their_tokens_with_or_without_spaces() {
        assert_eq!(test_token("4242 4242 4242 4242"), Some("tok_visa"));
        assert_eq!(test_token("4242424242424242"), Some("tok_visa"));
        assert_eq!(test_token(" 4242-4242-4242-4242 "), Some("tok_visa"));
        assert_eq!(
            test_token("4000 0000 0000 0002"),
            Some("tok_chargeDeclined")
        );
    }

    #[test]
    fn any_other_number_is_refused() {
        assert_eq!(test_token(""), None);
        assert_eq!(test_token("4242 4242 4242 4241"), None);
        assert_eq!(test_token("tok_visa"), None);
        assert_eq!(test_token("4242 4242 4242 4242 4"), None);
    }
}
