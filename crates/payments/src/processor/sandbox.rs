//! The sandbox processor, used when no Stripe key is configured (`stubs up` out of the box). It
//! accepts Stripe's documented test tokens (`tok_visa` succeeds, `tok_chargeDeclined` is
//! declined; see [`sandbox_card`]), keeps its books in the payments database
//! (`sandbox_charges`) and never leaves the machine. Like Stripe, it makes a charge in two steps
//! (an intent, then its confirmation), answers a repeated idempotency key with the intent it
//! created the first time, and can say where any intent is.

use async_trait::async_trait;
use common::Store;
use common::clock::now_millis;
use common::store::is_unavailable;

use super::{
    ChargeOutcome, ChargeRequest, IntentStatus, PaymentProcessor, Prepared, ProcessorError,
    RefundReceipt, RefundRequest,
};
use crate::store::{self, SandboxCharge};

/// What the sandbox processor does with one of Stripe's test tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxCard {
    Approved,
    /// Declined, with Stripe's message for that test card.
    Declined(&'static str),
}

const DECLINED: &str = "Your card was declined.";

/// Stripe's documented test tokens and payment methods the sandbox knows, and what each does.
const SANDBOX_CARDS: [(&str, SandboxCard); 22] = [
    ("tok_visa", SandboxCard::Approved),
    ("tok_visa_debit", SandboxCard::Approved),
    ("tok_mastercard", SandboxCard::Approved),
    ("tok_mastercard_debit", SandboxCard::Approved),
    ("tok_amex", SandboxCard::Approved),
    ("tok_discover", SandboxCard::Approved),
    ("pm_card_visa", SandboxCard::Approved),
    ("pm_card_visa_debit", SandboxCard::Approved),
    ("pm_card_mastercard", SandboxCard::Approved),
    ("pm_card_amex", SandboxCard::Approved),
    ("pm_card_discover", SandboxCard::Approved),
    ("tok_chargeDeclined", SandboxCard::Declined(DECLINED)),
    ("pm_card_chargeDeclined", SandboxCard::Declined(DECLINED)),
    (
        "pm_card_visa_chargeDeclined",
        SandboxCard::Declined(DECLINED),
    ),
    (
        "pm_card_chargeCustomerFail",
        SandboxCard::Declined(DECLINED),
    ),
    (
        "tok_chargeDeclinedInsufficientFunds",
        SandboxCard::Declined("Your card has insufficient funds."),
    ),
    (
        "pm_card_chargeDeclinedInsufficientFunds",
        SandboxCard::Declined("Your card has insufficient funds."),
    ),
    (
        "tok_chargeDeclinedExpiredCard",
        SandboxCard::Declined("Your card has expired."),
    ),
    (
        "pm_card_chargeDeclinedExpiredCard",
        SandboxCard::Declined("Your card has expired."),
    ),
    (
        "tok_chargeDeclinedIncorrectCvc",
        SandboxCard::Declined("Your card's security code is incorrect."),
    ),
    (
        "pm_card_chargeDeclinedIncorrectCvc",
        SandboxCard::Declined("Your card's security code is incorrect."),
    ),
    (
        "tok_chargeDeclinedProcessingError",
        SandboxCard::Declined("An error occurred while processing your card. Try again."),
    ),
];

/// What the sandbox does with a token; `None` for a token it does not know.
pub fn sandbox_card(token: &str) -> Option<SandboxCard> {
    SANDBOX_CARDS
        .iter()
        .find(|(known, _)| *known == token)
        .map(|(_, card)| *card)
}

/// The answer to a token the sandbox does not know.
pub const UNKNOWN_SANDBOX_TOKEN: &str = "Unknown test card: without a Stripe key, payments accept Stripe's test tokens such as \
     tok_visa or pm_card_visa (and tok_chargeDeclined to see a decline)";

/// The sandbox processor.
#[derive(Debug, Clone)]
pub struct Sandbox {
    store: Store,
}

impl Sandbox {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Moves an unconfirmed intent to `status`; answers where it is afterwards.
    async fn settle_intent(&self, intent_id: &str, status: &str) -> Result<String, ProcessorError> {
        store::sandbox_settle_intent(self.store.writer(), intent_id, status)
            .await
            .map_err(store_error)?
            .ok_or_else(|| no_such_intent(intent_id))
    }
}

fn store_error(err: sqlx::Error) -> ProcessorError {
    if is_unavailable(&err) {
        ProcessorError::Unavailable(err.into())
    } else {
        ProcessorError::Refused(err.into())
    }
}

fn no_such_intent(intent_id: &str) -> ProcessorError {
    ProcessorError::Refused(anyhow::anyhow!("the sandbox has no intent {intent_id}"))
}

fn intent_status(status: &str) -> Result<IntentStatus, ProcessorError> {
    match status {
        "requires_confirmation" => Ok(IntentStatus::RequiresConfirmation),
        "succeeded" => Ok(IntentStatus::Succeeded),
        "requires_payment_method" => Ok(IntentStatus::Failed),
        "canceled" => Ok(IntentStatus::Canceled),
        other => Err(ProcessorError::Refused(anyhow::anyhow!(
            "the sandbox does not know the intent status {other:?}"
        ))),
    }
}

#[async_trait]
impl PaymentProcessor for Sandbox {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn prepare(&self, request: &ChargeRequest) -> Result<Prepared, ProcessorError> {
        if sandbox_card(request.token.as_str()).is_none() {
            return Ok(Prepared::InvalidToken {
                message: UNKNOWN_SANDBOX_TOKEN.into(),
            });
        }
        let wanted = SandboxCharge {
            id: format!("ch_sandbox_{}", uuid::Uuid::now_v7().simple()),
            idempotency_key: request.idempotency_key.clone(),
            amount_cents: request.amount.get(),
            currency: request.currency.as_str().to_owned(),
            token: request.token.as_str().to_owned(),
            order_id: request.order_id,
            status: "requires_confirmation".into(),
        };
        let made = store::sandbox_prepare(self.store.writer(), &wanted, now_millis())
            .await
            .map_err(store_error)?;
        // Stripe refuses a key reused with other parameters; so does the sandbox.
        if made.amount_cents != wanted.amount_cents
            || made.currency != wanted.currency
            || made.token != wanted.token
        {
            return Err(ProcessorError::Refused(anyhow::anyhow!(
                "idempotency key {} was used for another charge",
                wanted.idempotency_key
            )));
        }
        Ok(Prepared::Intent { id: made.id })
    }

    async fn confirm(&self, intent_id: &str) -> Result<ChargeOutcome, ProcessorError> {
        let (token, _) = store::sandbox_intent(self.store.pool(), intent_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| no_such_intent(intent_id))?;
        let card = sandbox_card(&token);
        let confirmed = match card {
            Some(SandboxCard::Approved) => "succeeded",
            Some(SandboxCard::Declined(_)) | None => "requires_payment_method",
        };
        let status = self.settle_intent(intent_id, confirmed).await?;
        Ok(match intent_status(&status)? {
            IntentStatus::Succeeded => ChargeOutcome::Succeeded,
            IntentStatus::Canceled => ChargeOutcome::Canceled,
            IntentStatus::Failed => ChargeOutcome::Declined {
                message: match card {
                    Some(SandboxCard::Declined(message)) => message.into(),
                    _ => UNKNOWN_SANDBOX_TOKEN.into(),
                },
            },
            IntentStatus::RequiresConfirmation | IntentStatus::Processing => {
                return Err(ProcessorError::Refused(anyhow::anyhow!(
                    "sandbox intent {intent_id} is {status} after confirmation"
                )));
            }
        })
    }

    async fn look_up(&self, intent_id: &str) -> Result<IntentStatus, ProcessorError> {
        let (_, status) = store::sandbox_intent(self.store.pool(), intent_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| no_such_intent(intent_id))?;
        intent_status(&status)
    }

    async fn cancel(&self, intent_id: &str) -> Result<IntentStatus, ProcessorError> {
        intent_status(&self.settle_intent(intent_id, "canceled").await?)
    }

    async fn find_by_key(&self, idempotency_key: &str) -> Result<Option<String>, ProcessorError> {
        store::sandbox_intent_by_key(self.store.pool(), idempotency_key)
            .await
            .map_err(store_error)
    }

    async fn refund(&self, request: &RefundRequest) -> Result<RefundReceipt, ProcessorError> {
        let new_id = format!("re_sandbox_{}", uuid::Uuid::now_v7().simple());
        let refund_id = store::sandbox_refund(
            self.store.writer(),
            &request.stripe_id,
            &new_id,
            now_millis(),
        )
        .await
        .map_err(store_error)?;
        refund_id.map(|id| RefundReceipt { id }).ok_or_else(|| {
            ProcessorError::Refused(anyhow::anyhow!(
                "the sandbox has no charge {}",
                request.stripe_id
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_knows_stripes_test_tokens() {
        for approved in [
            "tok_visa",
            "tok_mastercard",
            "tok_amex",
            "pm_card_visa",
            "pm_card_mastercard",
            "pm_card_amex",
        ] {
            assert_eq!(
                sandbox_card(approved),
                Some(SandboxCard::Approved),
                "{approved}"
            );
        }
        for declined in [
            "tok_chargeDeclined",
            "pm_card_chargeDeclined",
            "pm_card_visa_chargeDeclined",
            "pm_card_chargeCustomerFail",
        ] {
            assert_eq!(
                sandbox_card(declined),
                Some(SandboxCard::Declined("Your card was declined.")),
                "{declined}"
            );
        }
        assert_eq!(
            sandbox_card("tok_chargeDeclinedInsufficientFunds"),
            Some(SandboxCard::Declined("Your card has insufficient funds."))
        );
        for unknown in [
            "tok_unknown",
            "TOK_VISA",
            "tok_visa ",
            "4242424242424242",
            "",
        ] {
            assert_eq!(sandbox_card(unknown), None, "{unknown:?}");
        }
    }
}
