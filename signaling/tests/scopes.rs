//! Operator API keys and their scopes, through `router(state).oneshot(..)`:
//! a district operator cannot read or schedule another district's rooms.

mod fakes;

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use fakes::{FakeKeys, FakeMedia, FakeStore};
use sabha_signaling::{AppState, Auth, CorsConfig, OperatorKey, router};
use serde_json::{Value, json};
use tower::ServiceExt;

const ROOT: &str = "sk_root_key_for_scope_tests";
const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";

struct Harness {
    app: Router,
    keys: Arc<FakeKeys>,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn harness() -> Harness {
    let store = Arc::new(FakeStore::default());
    let keys = Arc::new(FakeKeys::default());
    let state = AppState {
        media: Arc::new(FakeMedia::default()),
        rooms: store.clone(),
        attendance: store,
        org: Arc::new(fakes::FakeOrg::default()),
        auth: Auth::new(b"test secret, 32 bytes long......", OperatorKey::new(ROOT)),
        metrics: Arc::new(String::new),
        cors: CorsConfig::default(),
        settings: sabha_signaling::Settings::default(),
        keys: keys.clone(),
        members: Arc::new(fakes::FakeMembers::default()),
        pin_key: sabha_signaling::PinKey::derive(b"test pin key"),
        events: Arc::new(sabha_signaling::webhooks::Discard),
    };
    Harness {
        app: router(state),
        keys,
    }
}

impl Harness {
    async fn call(&self, method: Method, uri: &str, key: &str, body: Option<Value>) -> Reply {
        let builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {key}"));
        let request = match body {
            Some(body) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => builder.body(Body::empty()),
        }
        .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: axum::body::to_bytes(body, 1 << 20).await.unwrap(),
        }
    }

    async fn get(&self, uri: &str, key: &str) -> Reply {
        self.call(Method::GET, uri, key, None).await
    }

    /// A key for `unit` (or org-wide), created with the root key: (id, secret).
    async fn key(&self, name: &str, unit: Option<&str>) -> (String, String) {
        let reply = self
            .call(
                Method::POST,
                "/v1/keys",
                ROOT,
                Some(json!({"name": name, "unit": unit})),
            )
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        let body = reply.json();
        let id = body["id"].as_str().unwrap().to_owned();
        assert_eq!(reply.headers[header::LOCATION], format!("/v1/keys/{id}"));
        (id, body["secret"].as_str().unwrap().to_owned())
    }

    async fn room(&self, key: &str, unit: Option<&str>) -> Reply {
        let body = json!({"name": "Rally", "kind": "rally", "unit": unit});
        self.call(Method::POST, "/v1/rooms", key, Some(body)).await
    }

    async fn room_id(&self, unit: Option<&str>) -> String {
        let reply = self.room(ROOT, unit).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
        reply.json()["id"].as_str().unwrap().to_owned()
    }
}

/// A state with two districts, a mandal in each and a booth in the first.
async fn two_districts() -> Harness {
    let h = harness();
    let units = json!({"units": [
        {"id": "ST", "kind": "state", "name": "State", "parent": null},
        {"id": "D1", "kind": "district", "name": "One", "parent": "ST"},
        {"id": "D2", "kind": "district", "name": "Two", "parent": "ST"},
        {"id": "M1", "kind": "mandal", "name": "M One", "parent": "D1"},
        {"id": "B1", "kind": "booth", "name": "B One", "parent": "M1"},
        {"id": "M2", "kind": "mandal", "name": "M Two", "parent": "D2"},
    ]});
    let reply = h.call(Method::PUT, "/v1/org", ROOT, Some(units)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    h
}

fn ids(list: &Value, field: &str) -> Vec<String> {
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v[field].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_district_operator_cannot_read_or_schedule_another_districts_rooms() {
    let h = two_districts().await;
    let (_, k1) = h.key("District one office", Some("D1")).await;
    let (_, k2) = h.key("District two office", Some("D2")).await;
    let own = h.room_id(Some("B1")).await;
    let other = h.room_id(Some("M2")).await;
    let org_wide = h.room_id(None).await;

    // The list: own rooms only; the root key sees all.
    let mut expected = vec![own.clone()];
    assert_eq!(ids(&h.get("/v1/rooms", &k1).await.json(), "id"), expected);
    assert_eq!(
        ids(&h.get("/v1/rooms", &k2).await.json(), "id"),
        [other.as_str()]
    );
    expected.extend([other.clone(), org_wide.clone()]);
    expected.sort();
    assert_eq!(ids(&h.get("/v1/rooms", ROOT).await.json(), "id"), expected);

    // Another district's room (and an org-wide one) does not exist for k1.
    for room in [&other, &org_wide] {
        for uri in [
            format!("/v1/rooms/{room}"),
            format!("/v1/rooms/{room}/attendance"),
            format!("/v1/rooms/{room}/attendance.csv"),
            format!("/v1/rooms/{room}/participants"),
        ] {
            let reply = h.get(&uri, &k1).await;
            assert_eq!(reply.status, 404, "{uri}: {}", reply.text());
            assert!(reply.text().contains("no such room"), "{uri}");
        }
        let token = json!({"role": "listener"});
        let reply = h
            .call(
                Method::POST,
                &format!("/v1/rooms/{room}/tokens"),
                &k1,
                Some(token),
            )
            .await;
        assert_eq!(reply.status, 404);
        for action in ["lock", "end", "mute-all"] {
            let uri = format!("/v1/rooms/{room}/{action}");
            assert_eq!(h.call(Method::POST, &uri, &k1, None).await.status, 404);
        }
        let reply = h
            .call(Method::DELETE, &format!("/v1/rooms/{room}"), &k1, None)
            .await;
        assert_eq!(reply.status, 404);
    }
    // ... and is still there for its own district.
    assert_eq!(h.get(&format!("/v1/rooms/{other}"), &k2).await.status, 200);

    // Own rooms work as before.
    assert_eq!(h.get(&format!("/v1/rooms/{own}"), &k1).await.status, 200);
    assert_eq!(
        h.get(&format!("/v1/rooms/{own}/attendance"), &k1)
            .await
            .status,
        200
    );
    let reply = h
        .call(
            Method::POST,
            &format!("/v1/rooms/{own}/tokens"),
            &k1,
            Some(json!({"role": "listener"})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // Scheduling: under its own subtree only.
    assert_eq!(h.room(&k1, Some("M1")).await.status, 201);
    assert_eq!(h.room(&k1, Some("D1")).await.status, 201);
    for unit in [Some("M2"), Some("D2"), Some("ST"), Some("nowhere"), None] {
        let reply = h.room(&k1, unit).await;
        assert_eq!(reply.status, 403, "{unit:?}: {}", reply.text());
    }

    // The organisation: import is org-wide only; reads show the subtree.
    let import = json!({"units": [{"id": "M9", "kind": "mandal", "name": "x", "parent": "D1"}]});
    let reply = h.call(Method::PUT, "/v1/org", &k1, Some(import)).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    let units = h.get("/v1/org", &k1).await.json();
    assert_eq!(ids(&units["units"], "id"), ["B1", "D1", "M1"]);
    assert_eq!(h.get("/v1/org/M2", &k1).await.status, 404);
    assert_eq!(h.get("/v1/org/ST", &k1).await.status, 404);
    let m1 = h.get("/v1/org/M1", &k1).await.json();
    assert_eq!(ids(&m1["ancestors"], "id"), ["D1"], "nothing above D1");
    assert_eq!(ids(&m1["children"], "id"), ["B1"]);
    let m1 = h.get("/v1/org/M1", ROOT).await.json();
    assert_eq!(ids(&m1["ancestors"], "id"), ["D1", "ST"]);

    // Keys are managed by org-wide operators only.
    assert_eq!(h.get("/v1/keys", &k1).await.status, 403);
    let body = json!({"name": "mandal", "unit": "M1"});
    assert_eq!(
        h.call(Method::POST, "/v1/keys", &k1, Some(body))
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn a_scoped_key_is_host_only_in_its_rooms() {
    let h = two_districts().await;
    let (_, k1) = h.key("District one office", Some("D1")).await;
    let own = h.room_id(Some("M1")).await;
    let other = h.room_id(Some("M2")).await;
    let whip = |room: &str| {
        Request::post(format!("/v1/rooms/{room}/whip"))
            .header(header::AUTHORIZATION, format!("Bearer {k1}"))
            .header(header::CONTENT_TYPE, "application/sdp")
            .body(Body::from(OFFER))
            .unwrap()
    };
    let reply = h.app.clone().oneshot(whip(&other)).await.unwrap();
    assert_eq!(reply.status(), 404);
    let reply = h.app.clone().oneshot(whip(&own)).await.unwrap();
    assert_eq!(reply.status(), 201);
    let lock = format!("/v1/rooms/{own}/lock");
    assert_eq!(h.call(Method::POST, &lock, &k1, None).await.status, 204);
    let events = Request::get(format!("/v1/rooms/{other}/events"))
        .header(header::AUTHORIZATION, format!("Bearer {k1}"))
        .body(Body::empty())
        .unwrap();
    let reply = h.app.clone().oneshot(events).await.unwrap();
    assert_eq!(reply.status(), 404);
}

#[tokio::test]
async fn an_org_wide_api_key_acts_like_the_root_key() {
    let h = two_districts().await;
    let (_, key) = h.key("State office deputy", None).await;
    assert_eq!(h.room(&key, None).await.status, 201);
    assert_eq!(h.room(&key, Some("M2")).await.status, 201);
    assert_eq!(ids(&h.get("/v1/rooms", &key).await.json(), "id").len(), 2);
    assert_eq!(h.get("/v1/keys", &key).await.status, 200);
}

#[tokio::test]
async fn revocation_takes_effect_at_once() {
    let h = two_districts().await;
    let (id, secret) = h.key("District one office", Some("D1")).await;
    assert_eq!(h.get("/v1/rooms", &secret).await.status, 200);
    let reply = h
        .call(Method::DELETE, &format!("/v1/keys/{id}"), ROOT, None)
        .await;
    assert_eq!(reply.status, 204);
    let reply = h.get("/v1/rooms", &secret).await;
    assert_eq!(reply.status, 401);
    assert!(reply.headers.contains_key(header::WWW_AUTHENTICATE));
    // A second revoke, or an unknown id: 404.
    for uri in [format!("/v1/keys/{id}"), "/v1/keys/aaaaaaaaaaaa".into()] {
        assert_eq!(h.call(Method::DELETE, &uri, ROOT, None).await.status, 404);
    }
    let listed = h.get("/v1/keys", ROOT).await.json();
    assert!(listed[0]["revoked_at"].as_str().unwrap().ends_with('Z'));
    assert!(listed[0]["last_used_at"].is_string(), "{listed}");
}

#[tokio::test]
async fn listing_never_shows_secrets() {
    let h = two_districts().await;
    let (_, secret) = h.key("District one office", Some("D1")).await;
    let hash = h.keys.keys.lock().unwrap()[0].0.secret_hash.clone();
    let stored = format!("{:?}", h.keys.keys.lock().unwrap());
    let secret_part = secret.rsplit('_').next().unwrap();
    assert!(!stored.contains(secret_part), "only the hash is stored");
    let reply = h.get("/v1/keys", ROOT).await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert!(
        !text.contains(secret_part) && !text.contains(&hash),
        "{text}"
    );
    let listed = reply.json();
    assert_eq!(listed[0]["name"], "District one office");
    assert_eq!(listed[0]["unit"], "D1");
    assert!(listed[0].get("secret").is_none());
    assert!(listed[0]["revoked_at"].is_null());
}

#[tokio::test]
async fn bad_keys_are_401_and_bad_requests_422() {
    let h = two_districts().await;
    let (id, secret) = h.key("District one office", Some("D1")).await;
    let wrong_secret = format!("sk_{id}_{}", "0".repeat(64));
    let unknown_id = format!("sk_zzzzzzzzzzzz_{}", secret.rsplit('_').next().unwrap());
    for bad in [wrong_secret, unknown_id, format!("{secret}0")] {
        let reply = h.get("/v1/rooms", &bad).await;
        assert_eq!(reply.status, 401, "{bad}");
    }
    // API keys never travel in URLs.
    let room = h.room_id(Some("M1")).await;
    let url = Request::post(format!("/v1/rooms/{room}/whep?token={secret}"))
        .header(header::CONTENT_TYPE, "application/sdp")
        .body(Body::from(OFFER))
        .unwrap();
    assert_eq!(h.app.clone().oneshot(url).await.unwrap().status(), 401);

    for body in [
        json!({"name": "x", "unit": "nowhere"}),
        json!({"name": "  "}),
        json!({"name": "x", "extra": 1}),
    ] {
        let reply = h.call(Method::POST, "/v1/keys", ROOT, Some(body)).await;
        assert_eq!(reply.status, 422, "{}", reply.text());
    }
}

/// Members, PINs, invites and reach follow the key's scope too.
#[tokio::test]
async fn a_district_operator_sees_and_issues_only_its_own_members_and_pins() {
    let h = two_districts().await;
    let (_, k1) = h.key("District one office", Some("D1")).await;
    let members = json!({"members": [
        {"id": "m1", "name": "Asha", "phone": "+919800000001", "unit": "B1"},
        {"id": "m2", "name": "Ravi", "phone": "+919800000002", "unit": "M2"},
    ]});
    assert_eq!(
        h.call(Method::PUT, "/v1/members", &k1, Some(members.clone()))
            .await
            .status,
        403,
        "imports are organisation-wide"
    );
    assert_eq!(
        h.call(Method::PUT, "/v1/members", ROOT, Some(members))
            .await
            .status,
        200
    );

    let own = h.get("/v1/members", &k1).await;
    assert_eq!(own.status, 200);
    assert_eq!(ids(&own.json()["members"], "id"), ["m1"]);
    assert_eq!(h.get("/v1/members?unit=D2", &k1).await.status, 404);
    assert_eq!(h.get("/v1/members/m2", &k1).await.status, 404);
    assert_eq!(h.get("/v1/members/m1", &k1).await.status, 200);

    let pins = |unit: &str| json!({"unit": unit, "members": true});
    assert_eq!(
        h.call(Method::POST, "/v1/pins", &k1, Some(pins("D2")))
            .await
            .status,
        403
    );
    assert_eq!(
        h.call(Method::POST, "/v1/pins", &k1, Some(pins("D1")))
            .await
            .status,
        200
    );

    let other = h.room_id(Some("D2")).await;
    for uri in [
        format!("/v1/rooms/{other}/invite?unit=M2"),
        format!("/v1/rooms/{other}/reach"),
        format!("/v1/rooms/{other}/occurrences"),
    ] {
        assert_eq!(h.get(&uri, &k1).await.status, 404, "{uri}");
    }
}

#[tokio::test]
async fn a_tree_view_starts_at_the_top_the_key_may_see() {
    let h = two_districts().await;
    let (_, district) = h.key("District one office", Some("D1")).await;
    let root = h.get("/v1/org?roots=true", ROOT).await;
    assert_eq!(root.status, 200, "{}", root.text());
    assert_eq!(ids(&root.json()["units"], "id"), ["ST"]);
    let scoped = h.get("/v1/org?roots=true", &district).await;
    assert_eq!(ids(&scoped.json()["units"], "id"), ["D1"]);
}
