//! Whose attempts the sign-in limit counts: the peer's address, or behind a trusted ingress the
//! address the ingress saw.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::Request;
use tower_governor::GovernorError;
use tower_governor::key_extractor::KeyExtractor;

#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddress {
    /// Behind an ingress every peer is the ingress; it appends the address it saw to
    /// X-Forwarded-For. Only the last entry is the ingress's own word: anything before it came
    /// from the client and could be made up.
    pub trust_forwarded_for: bool,
}

impl KeyExtractor for ClientAddress {
    type Key = IpAddr;

    fn extract<T>(&self, request: &Request<T>) -> Result<IpAddr, GovernorError> {
        let forwarded = self
            .trust_forwarded_for
            .then(|| last_forwarded_for(request))
            .flatten();
        forwarded
            .or_else(|| {
                request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|info| info.0.ip())
            })
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

fn last_forwarded_for<T>(request: &Request<T>) -> Option<IpAddr> {
    request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .next_back()?
        .to_str()
        .ok()?
        .rsplit(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(forwarded_for: Option<&str>) -> Request<()> {
        let mut builder = Request::builder();
        if let Some(value) = forwarded_for {
            builder = builder.header("x-forwarded-for", value);
        }
        let mut request = builder.body(()).unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 9], 4000))));
        request
    }

    #[test]
    fn behind_an_ingress_the_last_forwarded_address_counts() {
        let key = ClientAddress {
            trust_forwarded_for: true,
        };
        // The client claimed 1.2.3.4; the ingress saw 203.0.113.7.
        let ip = key.extract(&request(Some("1.2.3.4, 203.0.113.7"))).unwrap();
        assert_eq!(ip, "203.0.113.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn without_trust_the_header_is_ignored() {
        let key = ClientAddress {
            trust_forwarded_for: false,
        };
        let ip = key.extract(&request(Some("203.0.113.7"))).unwrap();
        assert_eq!(ip, "10.0.0.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_missing_or_garbled_header_falls_back_to_the_peer() {
        let key = ClientAddress {
            trust_forwarded_for: true,
        };
        for header in [None, Some("not an address"), Some("")] {
            let ip = key.extract(&request(header)).unwrap();
            assert_eq!(ip, "10.0.0.9".parse::<IpAddr>().unwrap(), "{header:?}");
        }
    }
}
