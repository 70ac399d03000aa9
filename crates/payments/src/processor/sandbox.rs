//! The sandbox processor, used when no Stripe key is configured (`stubs up` out of the box). It
//! accepts Stripe's documented test tokens (`tok_visa` succeeds, `tok_chargeDeclined` is
//! declined; see [`crate::domain::sandbox_card`]), keeps its books in the payments database
//! (`sandbox_charges`) and never leaves the machine. Like Stripe, it answers a repeated
//! idempotency key with the charge it made the first time.

use async_trait::async_trait;
use common::Store;
use common::store::{is_unavailable, now_millis};

use super::{
    ChargeOutcome, ChargeRequest, PaymentProcessor, ProcessorError, RefundReceipt, RefundRequest,
};
use crate::domain::{SandboxCard, UNKNOWN_SANDBOX_TOKEN, sandbox_card};
use crate::store::{self, SandboxCharge};

/// The sandbox processor.
#[derive(Debug, Clone)]
pub struct Sandbox {
    store: Store,
}

impl Sandbox {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

fn store_error(err: sqlx::Error) -> ProcessorError {
    if is_unavailable(&err) {
        ProcessorError::Unavailable(err.into())
    } else {
        ProcessorError::Refused(err.into())
    }
}

#[async_trait]
impl PaymentProcessor for Sandbox {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, ProcessorError> {
        match sandbox_card(request.token.as_str()) {
            None => Ok(ChargeOutcome::InvalidToken {
                message: UNKNOWN_SANDBOX_TOKEN.into(),
            }),
            Some(SandboxCard::Declined(message)) => Ok(ChargeOutcome::Declined {
                message: message.into(),
            }),
            Some(SandboxCard::Approved) => {
                let wanted = SandboxCharge {
                    id: format!("ch_sandbox_{}", uuid::Uuid::now_v7().simple()),
                    idempotency_key: request.idempotency_key.clone(),
                    amount_cents: request.amount.get(),
                    currency: request.currency.clone(),
                    token: request.token.as_str().to_owned(),
                    order_id: request.order_id,
                };
                let made = store::sandbox_charge(self.store.writer(), &wanted, now_millis())
                    .await
                    .map_err(store_error)?;
                // Stripe refuses a key reused with other parameters; so does the sandbox.
                if made.amount_cents != wanted.amount_cents || made.currency != wanted.currency {
                    return Err(ProcessorError::Refused(anyhow::anyhow!(
                        "idempotency key {} was used for another charge",
                        wanted.idempotency_key
                    )));
                }
                Ok(ChargeOutcome::Succeeded { stripe_id: made.id })
            }
        }
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
