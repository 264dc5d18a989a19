//! The web pages, served by the binary itself: no separate web server, no
//! third-party CDN, nothing fetched from anywhere but this origin.
//!
//! | path              | page                                              |
//! |-------------------|---------------------------------------------------|
//! | `/l/{room}`       | Listen (phone first): WHEP, raise hand, data saver |
//! | `/h/{room}`       | Speak / host: mic check, WHIP, moderation          |
//! | `/b/{room}`       | Join a bridge: `/join`, mute self, roster          |
//! | `/j`, `/j/{code}` | PIN entry: room code + PIN, then the right page    |
//! | `/console`        | Operator console                                   |
//! | `/assets/{file}`  | the pages' scripts and styles                      |
//!
//! Every file is compiled in (`include_bytes!` from `signaling/pages/`):
//! the binary is the deployment, and a path can only ever name one of the
//! files in [`ASSETS`], so there is nothing to traverse. The pages are the
//! same for every room: each reads its room id from its own path and its
//! credentials from the URL fragment (`#token=…`), which browsers never
//! send to a server, so tokens do not reach access logs.
//!
//! Every response carries a strict Content-Security-Policy: scripts, styles
//! and connections only from this origin, no inline code, no framing, and
//! Trusted Types required, so a participant's name can never become markup.

use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::backend::{Role, RoomKind};
use crate::problem::ApiError;

/// The policy of every page and asset. `connect-src 'self'` covers the
/// same-origin WebSocket (CSP Level 3). `media-src` admits the
/// `MediaStream`s the pages play.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; media-src 'self' blob: mediastream:; \
connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

/// Microphone only for pages of this origin; nothing else a page could ask
/// for.
const PERMISSIONS_POLICY: &str = "microphone=(self), camera=(), geolocation=(), payment=(), usb=()";

/// One compiled-in file.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../pages/", $name)),
        }
    };
}

/// Everything under `/assets/`.
pub const ASSETS: &[Asset] = &[
    asset!("sabha.css", "text/css; charset=utf-8"),
    asset!("sabha.js", "text/javascript; charset=utf-8"),
    asset!("i18n.js", "text/javascript; charset=utf-8"),
    asset!("listen.js", "text/javascript; charset=utf-8"),
    asset!("host.js", "text/javascript; charset=utf-8"),
    asset!("bridge.js", "text/javascript; charset=utf-8"),
    asset!("pin.js", "text/javascript; charset=utf-8"),
    asset!("console.js", "text/javascript; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
];

/// The pages themselves, by name.
pub const LISTEN: Asset = asset!("listen.html", "text/html; charset=utf-8");
pub const HOST: Asset = asset!("host.html", "text/html; charset=utf-8");
pub const BRIDGE: Asset = asset!("bridge.html", "text/html; charset=utf-8");
pub const PIN: Asset = asset!("pin.html", "text/html; charset=utf-8");
pub const CONSOLE: Asset = asset!("console.html", "text/html; charset=utf-8");

/// The asset called `name`, if there is one.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// The headers every page and asset carries.
fn respond(asset: &Asset, cache: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (
                HeaderName::from_static("permissions-policy"),
                HeaderValue::from_static(PERMISSIONS_POLICY),
            ),
        ],
        asset.body,
    )
        .into_response()
}

/// Pages are revalidated on every load (they are tiny and name the assets);
/// assets may be cached for an hour.
const PAGE_CACHE: &str = "no-cache";
const ASSET_CACHE: &str = "public, max-age=3600";

/// `GET /assets/{file}`
pub async fn serve_asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let asset = asset(&name).ok_or(ApiError::NotFound("asset"))?;
    Ok(respond(asset, ASSET_CACHE))
}

/// `GET /l/{room}`
pub async fn listen(Path(_room): Path<String>) -> Response {
    respond(&LISTEN, PAGE_CACHE)
}

/// `GET /h/{room}`
pub async fn host(Path(_room): Path<String>) -> Response {
    respond(&HOST, PAGE_CACHE)
}

/// `GET /b/{room}`
pub async fn bridge(Path(_room): Path<String>) -> Response {
    respond(&BRIDGE, PAGE_CACHE)
}

/// `GET /j` and `GET /j/{code}`
pub async fn pin() -> Response {
    respond(&PIN, PAGE_CACHE)
}

/// `GET /console`
pub async fn console() -> Response {
    respond(&CONSOLE, PAGE_CACHE)
}

/// The page a holder of `role` uses in a room of `kind`: `/b/{room}` in a
/// bridge, `/h/{room}` for a rally's hosts and speakers, `/l/{room}` for
/// its listeners.
pub fn page_for(kind: RoomKind, role: Role, room: &str) -> String {
    let page = match (kind, role) {
        (RoomKind::Bridge, _) => "b",
        (RoomKind::Rally, Role::Host | Role::Speaker) => "h",
        (RoomKind::Rally, Role::Listener | Role::Participant) => "l",
    };
    format!("/{page}/{room}")
}

/// [`page_for`] with the token in the fragment: a link to send.
pub fn link_for(kind: RoomKind, role: Role, room: &str, token: &str) -> String {
    format!("{}#token={token}", page_for(kind, role, room))
}

/// The routes of the pages, merged into the router by [`crate::app`].
pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    use axum::routing::get;
    axum::Router::new()
        .route("/assets/{file}", get(serve_asset))
        .route("/l/{room}", get(listen))
        .route("/h/{room}", get(host))
        .route("/b/{room}", get(bridge))
        .route("/j", get(pin))
        .route("/j/{code}", get(|_: Path<String>| pin()))
        .route("/console", get(console))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files a page loads before audio starts, read from its HTML.
    fn loaded_by(page: &Asset) -> Vec<&'static Asset> {
        let html = std::str::from_utf8(page.body).unwrap();
        let mut found = Vec::new();
        for part in html.split("/assets/").skip(1) {
            let name = part.split(['"', '\'']).next().unwrap();
            found.push(asset(name).unwrap_or_else(|| panic!("{} loads unknown {name}", page.name)));
        }
        found
    }

    /// Every module a script imports (`from "./x.js"`), transitively.
    fn with_imports(mut files: Vec<&'static Asset>) -> Vec<&'static Asset> {
        let mut i = 0;
        while i < files.len() {
            let text = std::str::from_utf8(files[i].body).unwrap();
            for part in text.split("from \"./").skip(1) {
                let name = part.split('"').next().unwrap();
                let dep = asset(name)
                    .unwrap_or_else(|| panic!("{} imports unknown {name}", files[i].name));
                if !files.iter().any(|f| f.name == dep.name) {
                    files.push(dep);
                }
            }
            i += 1;
        }
        files
    }

    #[test]
    fn the_listen_page_weighs_under_100_kb_before_audio() {
        let files = with_imports(loaded_by(&LISTEN));
        let total: usize = LISTEN.body.len() + files.iter().map(|f| f.body.len()).sum::<usize>();
        assert!(
            files.iter().any(|f| f.name == "listen.js"),
            "listen.js not loaded"
        );
        assert!(total <= 100 * 1024, "listen page weighs {total} bytes");
    }

    #[test]
    fn every_page_loads_only_assets_that_exist_and_nothing_inline() {
        for page in [&LISTEN, &HOST, &BRIDGE, &PIN, &CONSOLE] {
            with_imports(loaded_by(page));
            let html = std::str::from_utf8(page.body).unwrap();
            assert!(!html.contains("<script>"), "{}: inline script", page.name);
            assert!(!html.contains("style="), "{}: inline style", page.name);
            assert!(
                !html.contains("http://") && !html.contains("https://"),
                "{}: external URL",
                page.name
            );
            assert!(html.contains("<html lang="), "{}: no lang", page.name);
        }
    }

    #[test]
    fn unknown_and_traversing_names_are_not_assets() {
        assert!(asset("sabha.js").is_some());
        for name in [
            "../Cargo.toml",
            "..%2fCargo.toml",
            "",
            "listen.html",
            "SABHA.JS",
        ] {
            assert!(asset(name).is_none(), "{name}");
        }
    }
}
