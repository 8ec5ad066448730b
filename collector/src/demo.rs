//! The demo shop, "Trailhead Outfitters", served under `/demo/` on the collector's own
//! port when `collector.demo` is on: a home page with the products and the newsletter
//! form, four product pages whose `<meta name="spur:topics">` name their topics, the
//! privacy policy and a page listing what this origin stored in the browser. Every
//! page embeds `/spur.js` as site `demo` (which whoever turns the demo on registers
//! for `localhost`) and the shop's own script, `demo/shop.js`: the consent banner
//! (accept all, reject all, per purpose; reopened by "Privacy settings" on every
//! page) and the sign-up, both through the tracker's public API only.
//!
//! The files in `demo/` are plain HTML, CSS, JavaScript and SVG, compiled in. At
//! start-up each page's content is put into `demo/layout.html` (title, topics, header,
//! footer, banner); every answer carries an `ETag` and `Cache-Control: no-cache`
//! (revalidated on each use, so a new version shows at once). The pages run under a
//! policy that lets them load and contact this origin only.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::reply::{Body, cached_response, etag_of, page_headers, text_response};

/// Where the shop lives; `/demo` redirects here.
pub const ROOT: &str = "/demo/";

/// The site id the pages send (`data-site`).
pub const SITE: &str = "demo";

/// What the demo's pages may load and contact: this origin only (the tracker posts to
/// `/v1/batch` here). No inline script or style.
pub const DEMO_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CACHE: &str = "no-cache";
const HTML: &str = "text/html; charset=utf-8";
const LAYOUT: &str = include_str!("demo/layout.html");
const CARD: &str = include_str!("demo/card.html");
const PRODUCT: &str = include_str!("demo/product.html");

/// One of the shop's pages: its path, its `<title>` and its content, which goes
/// into the layout's `<main>`.
struct Page {
    path: &'static str,
    title: &'static str,
    main: &'static str,
}

const PAGES: &[Page] = &[
    Page {
        path: ROOT,
        title: "Outdoor gear for long days outside",
        main: include_str!("demo/home.html"),
    },
    Page {
        path: "/demo/privacy",
        title: "Privacy policy",
        main: include_str!("demo/privacy.html"),
    },
    Page {
        path: "/demo/stored",
        title: "What your browser stored",
        main: include_str!("demo/stored.html"),
    },
];

/// A product: a card on the home page and a page of its own at `/demo/<slug>`,
/// whose `spur:topics` are `topics`. Its picture is `demo/img/<slug>.svg`. Plain
/// text only (no `<`, `&` or `"`: it goes into HTML as it is, a test checks).
struct Product {
    slug: &'static str,
    name: &'static str,
    price: u32,
    topics: &'static [&'static str],
    /// The shop section in the breadcrumb.
    section: &'static str,
    /// The picture's text alternative.
    alt: &'static str,
    description: &'static str,
    specs: &'static [&'static str],
}

const PRODUCTS: &[Product] = &[
    Product {
        slug: "boots",
        name: "Alpine Winter Boots",
        price: 149,
        topics: &["boots", "winter"],
        section: "Winter",
        alt: "A brown leather winter boot with a fleece cuff",
        description: "Full-grain leather with a waterproof membrane, a fleece lining that \
            keeps toes warm well below freezing, and a deep lug sole that grips packed \
            snow. Stitched, so a cobbler can resole them.",
        specs: &[
            "780 g per boot",
            "EU sizes 36 to 47",
            "Waterproof membrane, fleece lining",
        ],
    },
    Product {
        slug: "tent",
        name: "Ridgeline 2 Tent",
        price: 329,
        topics: &["tents", "camping"],
        section: "Camping",
        alt: "A green two-person tent lit from inside",
        description: "A freestanding two-person tent for three seasons. Two doors, two \
            porches for wet gear, and a flysheet that pitches first so the inner stays \
            dry when it rains.",
        specs: &[
            "2.1 kg packed",
            "Sleeps two, 130 cm wide",
            "Aluminium poles, colour-coded clips",
        ],
    },
    Product {
        slug: "jacket",
        name: "Summit Down Jacket",
        price: 239,
        topics: &["jackets", "winter"],
        section: "Winter",
        alt: "A red insulated winter jacket",
        description: "Responsibly sourced down in a windproof shell, a hood that fits \
            over a helmet, and deep hand pockets. It packs into its own chest pocket.",
        specs: &["420 g", "Sizes XS to XXL", "Water-repellent, without PFAS"],
    },
    Product {
        slug: "shoes",
        name: "Tempo Trail Runners",
        price: 119,
        topics: &["running shoes", "running"],
        section: "Running",
        alt: "An orange running shoe",
        description: "Light, cushioned shoes for mixed runs: tarmac to the park, gravel \
            and roots beyond it. A rock plate under the forefoot, a breathable mesh upper \
            and grippy lugs.",
        specs: &["265 g per shoe", "6 mm drop", "EU sizes 36 to 48"],
    },
];

impl Product {
    /// `template` (`demo/card.html`, `demo/product.html`) filled with this product.
    fn fill(&self, template: &str) -> String {
        let items = |list: &[&str]| {
            list.iter()
                .map(|i| format!("<li>{i}</li>"))
                .collect::<String>()
        };
        template
            .replace("{{slug}}", self.slug)
            .replace("{{name}}", self.name)
            .replace("{{price}}", &self.price.to_string())
            .replace("{{tags}}", &items(self.topics))
            .replace("{{section}}", self.section)
            .replace("{{alt}}", self.alt)
            .replace("{{description}}", self.description)
            .replace("{{specs}}", &items(self.specs))
    }

    fn path(&self) -> String {
        format!("{ROOT}{}", self.slug)
    }
}

/// The files served as they are: path, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/demo/shop.css",
        "text/css; charset=utf-8",
        include_str!("demo/shop.css"),
    ),
    (
        "/demo/shop.js",
        "text/javascript; charset=utf-8",
        include_str!("demo/shop.js"),
    ),
    (
        "/demo/img/logo.svg",
        "image/svg+xml",
        include_str!("demo/img/logo.svg"),
    ),
    (
        "/demo/img/hero.svg",
        "image/svg+xml",
        include_str!("demo/img/hero.svg"),
    ),
    (
        "/demo/img/boots.svg",
        "image/svg+xml",
        include_str!("demo/img/boots.svg"),
    ),
    (
        "/demo/img/tent.svg",
        "image/svg+xml",
        include_str!("demo/img/tent.svg"),
    ),
    (
        "/demo/img/jacket.svg",
        "image/svg+xml",
        include_str!("demo/img/jacket.svg"),
    ),
    (
        "/demo/img/shoes.svg",
        "image/svg+xml",
        include_str!("demo/img/shoes.svg"),
    ),
];

#[derive(Debug, Clone)]
struct File {
    content_type: &'static str,
    body: Bytes,
    etag: HeaderValue,
}

impl File {
    fn new(content_type: &'static str, body: String) -> File {
        File {
            content_type,
            etag: etag_of(body.as_bytes()),
            body: Bytes::from(body),
        }
    }
}

/// The shop's files by path, rendered once.
#[derive(Debug, Clone)]
pub struct Demo {
    files: HashMap<String, File>,
    not_found: Bytes,
}

/// A page's content in the layout, with a `spur:topics` tag when it has topics.
fn render(title: &str, topics: &[&str], main: &str) -> String {
    let head = if topics.is_empty() {
        String::new()
    } else {
        format!(
            "<meta name=\"spur:topics\" content=\"{}\">\n",
            topics.join(",")
        )
    };
    LAYOUT
        .replace("{{title}}", title)
        .replace("{{head}}", &head)
        .replace("{{main}}", main.trim_end())
}

impl Default for Demo {
    fn default() -> Self {
        let cards: String = PRODUCTS.iter().map(|p| p.fill(CARD)).collect();
        let pages = PAGES.iter().map(|p| {
            let main = p.main.replace("{{cards}}", cards.trim_end());
            (
                p.path.to_owned(),
                File::new(HTML, render(p.title, &[], &main)),
            )
        });
        let products = PRODUCTS.iter().map(|p| {
            let page = render(p.name, p.topics, &p.fill(PRODUCT));
            (p.path(), File::new(HTML, page))
        });
        let assets = ASSETS
            .iter()
            .map(|(path, kind, body)| ((*path).to_owned(), File::new(kind, (*body).to_owned())));
        Demo {
            files: pages.chain(products).chain(assets).collect(),
            not_found: Bytes::from(render(
                "Page not found",
                &[],
                include_str!("demo/not-found.html"),
            )),
        }
    }
}

impl Demo {
    /// Whether `path` belongs to the demo (`/demo` and everything under `/demo/`).
    pub fn owns(path: &str) -> bool {
        path == "/demo" || path.starts_with(ROOT)
    }

    /// The answer to a `GET` or `HEAD` of `path` (one the demo [owns](Demo::owns)): the
    /// file, `304` when the client holds it, a redirect from `/demo` to `/demo/`, or
    /// the shop's "page not found" with status 404.
    pub fn serve(&self, path: &str, request: &HeaderMap) -> Response<Body> {
        let mut response = if path == "/demo" {
            let mut r = text_response(StatusCode::PERMANENT_REDIRECT, "text/plain", Bytes::new());
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static(ROOT));
            r
        } else if let Some(file) = self.files.get(path) {
            cached_response(request, file.content_type, &file.body, &file.etag, CACHE)
        } else {
            text_response(StatusCode::NOT_FOUND, HTML, self.not_found.clone())
        };
        page_headers(response.headers_mut(), DEMO_CSP, "same-origin");
        response
    }

    /// Every path served (tests, link checks).
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(demo: &Demo, path: &str) -> Response<Body> {
        demo.serve(path, &HeaderMap::new())
    }

    fn text(response: Response<Body>) -> String {
        use http_body_util::BodyExt;
        let body = futures::executor::block_on(response.into_body().collect())
            .expect("in memory")
            .to_bytes();
        String::from_utf8(body.to_vec()).expect("utf-8")
    }

    #[test]
    fn pages_are_whole_documents_with_tracker_banner_and_topics() {
        let demo = Demo::default();
        let pages = PAGES.iter().map(|p| (p.path.to_owned(), p.title, None));
        let products = PRODUCTS
            .iter()
            .map(|p| (p.path(), p.name, Some(p.topics.join(","))));
        let mut with_topics = 0;
        for (path, title, topics) in pages.chain(products) {
            let response = get(&demo, &path);
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], HTML);
            assert_eq!(response.headers()[header::CACHE_CONTROL], CACHE);
            let html = text(response);
            assert!(!html.contains("{{"), "{path}: unfilled template");
            assert!(html.contains(&format!("<title>{title} · ")));
            let tracker = format!(r#"<script defer src="/spur.js" data-site="{SITE}"></script>"#);
            assert!(html.contains(&tracker), "{path}: tracker");
            assert!(html.contains(r#"id="consent""#), "{path}: banner");
            assert!(
                html.contains("data-open-consent>Privacy settings</a>"),
                "{path}: privacy settings link"
            );
            let meta = html
                .split(r#"<meta name="spur:topics" content=""#)
                .nth(1)
                .and_then(|rest| rest.split('"').next());
            assert_eq!(meta, topics.as_deref(), "{path}: topics");
            with_topics += usize::from(meta.is_some());
            // The shop's script comes first, so its queued consent precedes the
            // tracker's first pageview; neither may be inline (the policy forbids it).
            let shop = html
                .find(r#"<script src="/demo/shop.js">"#)
                .expect("shop.js");
            assert!(shop < html.find("/spur.js").expect("tracker"));
            assert!(!html.contains("<script>") && !html.contains(" style="));
        }
        assert_eq!(with_topics, 4, "four product pages");
        let home = text(get(&demo, ROOT));
        for product in PRODUCTS {
            assert!(home.contains(&format!(
                r#"<a class="card" href="/demo/{}">"#,
                product.slug
            )));
        }
    }

    #[test]
    fn product_text_needs_no_escaping() {
        for p in PRODUCTS {
            let texts = [p.slug, p.name, p.section, p.alt, p.description];
            for text in texts.iter().chain(p.topics).chain(p.specs) {
                assert!(!text.contains(['<', '>', '&', '"']), "{text}");
            }
            // The tag's content is a comma-separated list.
            assert!(!p.topics.iter().any(|t| t.contains(',')), "{}", p.slug);
        }
    }

    #[test]
    fn every_local_link_and_resource_is_served() {
        let demo = Demo::default();
        let served: Vec<&str> = demo.paths().collect();
        let mut checked = 0;
        for path in &served {
            let body = text(get(&demo, path));
            for attr in ["href=\"", "src=\""] {
                for (at, _) in body.match_indices(attr) {
                    let value = &body[at + attr.len()..];
                    let target = &value[..value.find('"').expect("closing quote")];
                    if !target.starts_with('/') {
                        assert!(
                            target.starts_with('#'),
                            "{path}: {target} leaves the origin"
                        );
                        continue;
                    }
                    let target = target.split('#').next().unwrap_or_default();
                    assert!(
                        target == "/spur.js" || served.contains(&target),
                        "{path} links to {target}, which is not served"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 30, "only {checked} links found");
    }

    #[test]
    fn unknown_paths_are_the_shops_not_found_and_demo_redirects() {
        let demo = Demo::default();
        let missing = get(&demo, "/demo/nope");
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(missing.headers()[header::CONTENT_TYPE], HTML);
        assert_eq!(missing.headers()[header::CACHE_CONTROL], "no-store");
        assert!(text(missing).contains("Page not found"));
        let bare = get(&demo, "/demo");
        assert_eq!(bare.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(bare.headers()[header::LOCATION], ROOT);
        assert!(Demo::owns("/demo") && Demo::owns("/demo/x") && !Demo::owns("/demos"));
    }

    #[test]
    fn assets_have_their_types_and_the_page_policy() {
        let demo = Demo::default();
        for (path, kind) in [
            ("/demo/shop.css", "text/css; charset=utf-8"),
            ("/demo/shop.js", "text/javascript; charset=utf-8"),
            ("/demo/img/boots.svg", "image/svg+xml"),
        ] {
            let response = get(&demo, path);
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[header::CONTENT_TYPE], kind);
            assert_eq!(
                response.headers()[header::CONTENT_SECURITY_POLICY],
                DEMO_CSP
            );
            assert_eq!(response.headers()["x-content-type-options"], "nosniff");
            assert!(response.headers().contains_key(header::ETAG));
        }
    }
}
