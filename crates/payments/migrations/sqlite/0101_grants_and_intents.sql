-- Charges are made in two steps: the intent is created and its id recorded on the claim before
-- it is confirmed, so a claim left pending by a crash can always be looked up and settled or
-- released. The sandbox keeps each intent's state as Stripe does; rows from before this
-- migration were all charges that went through.
ALTER TABLE sandbox_charges ADD COLUMN status TEXT NOT NULL DEFAULT 'succeeded' CHECK (
    status IN ('requires_confirmation', 'succeeded', 'requires_payment_method', 'canceled')
);

-- The reconciler's work: claims left pending past their timeout.
CREATE INDEX payments_pending_claims ON payments (updated_at) WHERE status = 'pending';

-- When the orders service granted the order to this claim (order:updated, awaiting:payment). A
-- claim is charged only once granted, so an order its buyer cancels, or that lapses, is never
-- charged; a claim never granted is withdrawn.
ALTER TABLE payments ADD COLUMN granted_at BIGINT;

-- Claims left pending by the one-step flow may have charged with no intent recorded: they are
-- marked (granted at 0, a time the code never writes), and the reconciler asks the processor
-- for the charge made under their idempotency key instead.
UPDATE payments SET granted_at = 0 WHERE status = 'pending' AND stripe_id IS NULL;
