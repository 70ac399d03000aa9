//! What every Stubs service shares: the error shape, sessions, validated input, money, the event
//! types, the store seam, the bus seam with its two implementations, the transactional outbox and
//! inbox, the HTTP stack and telemetry.
//!
//! A service crate builds on these and adds only its own domain, SQL and routes.

pub mod arrivals;
pub mod background;
pub mod bus;
pub mod clock;
pub mod config;
pub mod error;
pub mod events;
pub mod http;
pub mod idempotency;
pub mod listener;
pub mod money;
pub mod openapi;
pub mod outbox;
pub mod paging;
pub mod retention;
pub mod revocation;
pub mod service;
pub mod session;
pub mod store;
pub mod telemetry;
pub mod validate;

pub use error::{ApiError, ErrorCode, FieldError};
pub use service::ServiceContext;
pub use session::{CurrentUser, Sessions, SignedIn};
pub use store::Store;
