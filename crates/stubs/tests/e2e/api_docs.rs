//! The API's reference through the real binary, embedded and behind the ingress: the merged
//! OpenAPI document at `/api/openapi.json`, each service's own at `/openapi.json`, and the page
//! at `/api/docs` with everything it loads served from the same place.

use std::collections::BTreeSet;

use crate::support::Marketplace;
use serde_json::Value;

/// Every operation of the API: the service that answers it, its method and its path.
const OPERATIONS: [(&str, &str, &str); 24] = [
    ("auth", "post", "/api/users/signup"),
    ("auth", "post", "/api/users/signin"),
    ("auth", "post", "/api/users/signout"),
    ("auth", "post", "/api/users/signout/everywhere"),
    ("auth", "get", "/api/users/currentuser"),
    ("tickets", "get", "/api/tickets"),
    ("tickets", "post", "/api/tickets"),
    ("tickets", "get", "/api/tickets/{id}"),
    ("tickets", "put", "/api/tickets/{id}"),
    ("tickets", "get", "/api/events"),
    ("tickets", "post", "/api/events"),
    ("tickets", "get", "/api/events/{id}"),
    ("tickets", "get", "/api/events/{id}/tickets"),
    ("tickets", "get", "/api/users/me/tickets"),
    ("tickets", "get", "/api/users/me/sales"),
    ("tickets", "post", "/api/tickets/{id}/resale"),
    ("tickets", "get", "/api/tickets/{id}/history"),
    ("tickets", "post", "/api/tickets/{id}/send"),
    ("orders", "get", "/api/orders"),
    ("orders", "post", "/api/orders"),
    ("orders", "get", "/api/orders/{id}"),
    ("orders", "delete", "/api/orders/{id}"),
    ("payments", "post", "/api/payments"),
    ("payments", "post", "/api/payments/webhook"),
];

type Operation = (String, String);

fn expected(service: Option<&str>) -> BTreeSet<Operation> {
    OPERATIONS
        .iter()
        .filter(|(owner, ..)| service.is_none_or(|service| service == *owner))
        .map(|(_, method, path)| (method.to_string(), path.to_string()))
        .collect()
}

/// The operations a document describes, each checked for what its handler must say: a name
/// for client generators and its answer on success. (Whether each answer is the one described
/// is for `scripts/fuzz-api`, which sends thousands.)
fn operations(document: &Value) -> BTreeSet<Operation> {
    assert_eq!(document["openapi"], "3.1.0", "{document}");
    let mut found = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                operation["operationId"].is_string()
                    && responses.keys().any(|status| status.starts_with('2')),
                "{method} {path}: {operation}"
            );
            found.insert((method.clone(), path.clone()));
        }
    }
    found
}

async fn get(url: &str) -> reqwest::Response {
    let answer = reqwest::get(url).await.unwrap();
    assert_eq!(answer.status(), 200, "{url}");
    answer
}

/// The values of `attribute="…"` in a page.
fn attribute_values<'a>(page: &'a str, attribute: &str) -> Vec<&'a str> {
    let opening = format!("{attribute}=\"");
    page.split(&opening)
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect()
}

async fn the_api_describes_itself(market: Marketplace) {
    let served: Value = get(&market.url("/api/openapi.json"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(operations(&served), expected(None));
    assert_eq!(
        served,
        serde_json::to_value(stubs::api_docs::document()).unwrap(),
        "the document served is the one `stubs openapi` prints"
    );
    for (service, ..) in OPERATIONS {
        for base in market.replica_bases(service) {
            let own: Value = get(&format!("{base}/openapi.json"))
                .await
                .json()
                .await
                .unwrap();
            // One process serves every service when embedded.
            let owner = (!market.database_urls().is_empty()).then_some(service);
            assert_eq!(operations(&own), expected(owner), "{service} at {base}");
        }
    }

    // `/api/docs` leads to the page, and everything the page loads comes from here too.
    let page = get(&market.url("/api/docs")).await;
    let page_url = page.url().clone();
    assert_eq!(page_url.path(), "/api/docs/");
    // The pages' policy: nothing from elsewhere, no framing.
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("default-src 'self'") && policy.contains("frame-ancestors 'none'"));
    let page = page.text().await.unwrap();
    let assets = [
        attribute_values(&page, "src"),
        attribute_values(&page, "href"),
    ]
    .concat();
    assert!(assets.len() >= 3, "{page}");
    for asset in assets {
        let url = page_url.join(asset).unwrap();
        assert_eq!(
            url.origin(),
            page_url.origin(),
            "{asset} is not served here"
        );
        get(url.as_str()).await;
    }
}

mod the_api_describes_itself {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        super::the_api_describes_itself(super::Marketplace::embedded("60s")).await
    }
    testkit::distributed_test! {
        async fn distributed() {
            super::the_api_describes_itself(super::Marketplace::distributed("60s").await).await
        }
    }
}
