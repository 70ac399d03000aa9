-- The payment an order awaiting payment is granted to: only that payment may charge it, and only
-- its failure gives the order back to its buyer to pay again or cancel. The attempt of the last
-- payment granted stays after the grant ends, so that a late request of an older attempt is
-- never granted.
ALTER TABLE orders ADD COLUMN payment_id TEXT;
ALTER TABLE orders ADD COLUMN payment_attempt BIGINT;
