//! `GET /openapi.json`: the OpenAPI 3.1 document of the player listener. It is written by
//! hand in docs/openapi.json and compiled in, so what is served is what is reviewed; the
//! tests below fail when the routes registered and the operations documented differ.

use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, web};

use super::route;

/// docs/openapi.json.
pub const DOCUMENT: &str = include_str!("../../docs/openapi.json");

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(route("/openapi.json").route(web::get().to(document)));
}

async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(DOCUMENT)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use actix_web::App;
    use actix_web::http::{Method, StatusCode};
    use actix_web::test::{TestRequest, call_service, init_service};

    use super::DOCUMENT;
    use crate::api::{DevRoutes, REGISTERED, routes};

    /// Every method a route could be registered for.
    const METHODS: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
    ];

    /// The routes that exist only when `dev.*` turns them on, and are left out of the
    /// document on purpose (no player calls them; production nodes answer 404).
    const DEV_ONLY: [&str; 2] = ["/dev/clock/advance", "/non-production/utils/publish"];

    /// (path pattern, method), as the document spells them.
    type Operations = BTreeSet<(String, &'static str)>;

    /// (pattern, method) of every route the player listener serves: the patterns as
    /// `api::route` saw them registered, the methods by asking the built app each one.
    async fn served(dev: DevRoutes) -> Operations {
        REGISTERED.take();
        let app = init_service(App::new().configure(|cfg| routes(cfg, dev))).await;
        let patterns = REGISTERED.take();
        assert!(!patterns.is_empty(), "routes registered nothing");
        let mut served = Operations::new();
        for pattern in patterns {
            // Any one segment matches a `{param}`; which one does not matter here.
            let path = pattern
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') {
                        "x"
                    } else {
                        segment
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            for method in METHODS {
                let request = TestRequest::default()
                    .method(Method::from_bytes(method.as_bytes()).expect("a method"))
                    .uri(&path)
                    .to_request();
                let response = call_service(&app, request).await;
                // No app state here: a handler that needs it answers 500, which still
                // says that the method is routed. An unrouted method answers 405.
                let routed = response.request().match_name() == Some(pattern)
                    && response.status() != StatusCode::METHOD_NOT_ALLOWED;
                if routed {
                    served.insert((pattern.to_owned(), method));
                }
            }
        }
        served
    }

    fn documented() -> Operations {
        let document: serde_json::Value = serde_json::from_str(DOCUMENT).expect("JSON");
        let paths = document["paths"].as_object().expect("paths");
        let mut operations = Operations::new();
        for (path, item) in paths {
            for method in METHODS {
                if item.get(method.to_lowercase()).is_some() {
                    operations.insert((path.clone(), method));
                }
            }
        }
        operations
    }

    fn listed(operations: &Operations) -> String {
        operations
            .iter()
            .map(|(path, method)| format!("\n  {method} {path}"))
            .collect()
    }

    #[actix_web::test]
    async fn the_document_names_exactly_the_routes_served() {
        let production = DevRoutes {
            clock: false,
            publish: false,
        };
        let served = served(production).await;
        let documented = documented();
        let undocumented: Operations = served.difference(&documented).cloned().collect();
        let missing: Operations = documented.difference(&served).cloned().collect();
        assert!(
            undocumented.is_empty() && missing.is_empty(),
            "docs/openapi.json and the routes differ.\nserved, not documented:{}\ndocumented, not served:{}",
            listed(&undocumented),
            listed(&missing),
        );
    }

    #[actix_web::test]
    async fn only_the_known_dev_routes_are_left_out_of_the_document() {
        let production = DevRoutes {
            clock: false,
            publish: false,
        };
        let dev = DevRoutes {
            clock: true,
            publish: true,
        };
        let production = served(production).await;
        let dev_only: BTreeSet<String> = served(dev)
            .await
            .difference(&production)
            .map(|(path, _)| path.clone())
            .collect();
        assert_eq!(dev_only, DEV_ONLY.map(String::from).into());
    }

    /// Every `.rs` file under `dir`.
    fn sources(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).expect("a source dir") {
            let path = entry.expect("a dir entry").path();
            if path.is_dir() {
                files.extend(sources(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
        files
    }

    /// The coverage test sees the routes `api::route` made: one registered any other way
    /// would escape it (and be counted as "unmatched" in the metrics), so no player route
    /// may be. The cluster listener's routes (api/cluster/) are not player routes.
    #[test]
    fn every_player_route_is_made_by_api_route() {
        let api = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        // Spelt in pieces, so that this file does not match itself. The first is what
        // `api::route` itself uses, once, in api/mod.rs.
        let other_ways = ["web::resource", "web::scope", "web::service", "cfg.route"]
            .map(|way| format!("{way}("))
            .into_iter()
            .chain([format!(".route({}/", '"')]);
        for file in sources(&api) {
            if file.starts_with(api.join("cluster")) {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("a source file");
            for (i, way) in other_ways.clone().enumerate() {
                let allowed = usize::from(i == 0 && file.ends_with("api/mod.rs"));
                assert_eq!(
                    text.matches(&way).count(),
                    allowed,
                    "{} registers a route with {way}: use api::route, so that the \
                     route-coverage test sees it",
                    file.display()
                );
            }
        }
    }

    #[test]
    fn the_document_is_openapi_3_1() {
        let document: serde_json::Value = serde_json::from_str(DOCUMENT).expect("JSON");
        let version = document["openapi"].as_str().unwrap_or_default();
        assert!(version.starts_with("3.1."), "openapi: {version:?}");
    }
}
