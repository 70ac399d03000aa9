//! nginx as the ingress: the configuration routing each path prefix to its service's replicas.

use std::fmt::Write as _;
use std::path::Path;

/// One upstream: a service's name, the prefix routed to it and its replicas' ports.
pub(crate) struct Route<'a> {
    pub service: &'a str,
    pub prefixes: &'a [&'a str],
    pub ports: Vec<u16>,
}

/// The whole configuration for an nginx run in the foreground with everything under `dir`.
pub(crate) fn config(dir: &Path, listen_port: u16, routes: &[Route<'_>], as_root: bool) -> String {
    let dir = dir.display();
    let mut conf = String::new();
    // As root, nginx would hand requests to `nobody`, who cannot enter a private temporary folder.
    if as_root {
        conf.push_str("user root;\n");
    }
    let _ = write!(
        conf,
        "worker_processes auto;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-tmp/body;
    proxy_temp_path {dir}/nginx-tmp/proxy;
    fastcgi_temp_path {dir}/nginx-tmp/fastcgi;
    uwsgi_temp_path {dir}/nginx-tmp/uwsgi;
    scgi_temp_path {dir}/nginx-tmp/scgi;
    client_max_body_size 1m;
    # Request lines and headers as long as the services take (they answer 400 past 16 KiB in
    # the API's shape), rather than nginx's 8 KiB and its own 414 page.
    large_client_header_buffers 4 64k;
    proxy_http_version 1.1;
    proxy_set_header Connection \"\";
    # The host as the browser sent it, port and all: web checks a form's Origin against it.
    proxy_set_header Host $http_host;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Request-Id $request_id;
    proxy_connect_timeout 2s;
    proxy_read_timeout 30s;
    # A replica that refuses connections is skipped for a moment; a request already sent is
    # never sent again to another replica unless it is idempotent (nginx's default).
    proxy_next_upstream error timeout;
"
    );
    for route in routes {
        let _ = writeln!(conf, "    upstream {} {{", route.service);
        for port in &route.ports {
            let _ = writeln!(
                conf,
                "        server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;"
            );
        }
        // Idle connections are dropped well before the services' own 10 s header timeout closes
        // them, so that a request never goes out on a connection the service is closing.
        let _ = writeln!(
            conf,
            "        keepalive 32;\n        keepalive_timeout 5s;\n    }}"
        );
    }
    let _ = writeln!(
        conf,
        "    server {{\n        listen 127.0.0.1:{listen_port};"
    );
    // Errors nginx itself makes (no replica answered) in the API's error shape, as the
    // deployed ingress gives them.
    conf.push_str(concat!(
        "        default_type application/json;\n",
        "        error_page 502 503 504 =503 @unavailable;\n",
        "        location @unavailable { return 503 ",
        r#"'{"errors":[{"message":"Service unavailable","code":"unavailable"}]}'; }"#,
        "\n",
        "        location @too_large { return 400 ",
        r#"'{"errors":[{"message":"Request body is too large","code":"malformed_request"}]}'; }"#,
        "\n"
    ));
    for route in routes {
        for prefix in route.prefixes {
            // A body past the limit is refused by nginx: in the API's shape under /api. An
            // error_page here replaces the server's, so that one is repeated.
            let too_large = if prefix.starts_with("/api") {
                "error_page 502 503 504 =503 @unavailable; error_page 413 =400 @too_large; "
            } else {
                ""
            };
            let _ = writeln!(
                conf,
                "        location {prefix} {{ {too_large}proxy_pass http://{}; }}",
                route.service
            );
        }
    }
    conf.push_str("    }\n}\n");
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_each_prefix_to_every_replica_of_its_service() {
        let conf = config(
            Path::new("/tmp/c"),
            8080,
            &[
                Route {
                    service: "tickets",
                    prefixes: &["/api/tickets", "/api/events"],
                    ports: vec![9001, 9002],
                },
                Route {
                    service: "web",
                    prefixes: &["/"],
                    ports: vec![9003],
                },
            ],
            false,
        );
        assert!(conf.contains("listen 127.0.0.1:8080;"));
        assert!(conf.contains(
            "upstream tickets {\n        server 127.0.0.1:9001 max_fails=1 fail_timeout=2s;\n        server 127.0.0.1:9002"
        ));
        assert!(conf.contains(
            "location /api/tickets { error_page 502 503 504 =503 @unavailable; \
             error_page 413 =400 @too_large; proxy_pass http://tickets; }"
        ));
        assert!(conf.contains(
            "location /api/events { error_page 502 503 504 =503 @unavailable; \
             error_page 413 =400 @too_large; proxy_pass http://tickets; }"
        ));
        assert!(conf.contains("location / { proxy_pass http://web; }"));
        assert!(!conf.contains("user root"));
    }
}
