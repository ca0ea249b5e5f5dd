//! `access-control`: cross-origin resource sharing, and refusing origins.
//!
//! Under `policy: same-origin` (the default, as in Zilla) the server adds no
//! CORS headers and refuses nothing: browsers then keep scripts of other
//! origins from reading responses. Under `policy: cross-origin` the server
//! answers preflights itself (they carry no credentials and must not reach
//! an exit that would ask for them), adds the CORS headers to every other
//! response, and refuses requests from origins `allow.origins` does not list.
//! Refusing matters most for WebSocket upgrades, which browsers send
//! cross-origin without a preflight and with the user's cookies: it is what
//! stops cross-site WebSocket hijacking.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use crate::options::{AccessControl, Policy};
use crate::routes::wildcard_matches;

/// The access-control policy of one server, ready to apply.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cors {
    /// `None` under `same-origin`: nothing to do.
    cross: Option<CrossOrigin>,
}

#[derive(Debug, Clone)]
struct CrossOrigin {
    origins: Option<Vec<String>>,
    methods: Option<HeaderValue>,
    headers: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
    expose: Option<HeaderValue>,
}

/// What the policy says about one request.
#[derive(Debug)]
pub(crate) enum CorsCheck {
    /// The request's origin is not allowed: answer `403`.
    Refused {
        /// The refused origin, for the event.
        origin: String,
    },
    /// A preflight, answered here.
    Preflight(Response<Bytes>),
    /// Carry on; `allow_origin` is what to put in
    /// `Access-Control-Allow-Origin` of the response, if anything.
    Pass {
        /// The allowed origin (or `*`), for a cross-origin request.
        allow_origin: Option<HeaderValue>,
    },
}

impl Cors {
    /// The policy `options` describe, or `(path below access-control, message)`
    /// for each problem.
    pub(crate) fn new(options: Option<&AccessControl>) -> Result<Self, Vec<(String, String)>> {
        let Some(options) = options else {
            return Ok(Self::default());
        };
        let mut errors = Vec::new();
        if options.policy == Policy::SameOrigin {
            for (given, key) in [
                (options.allow.is_some(), "allow"),
                (options.max_age.is_some(), "max-age"),
                (options.expose.is_some(), "expose"),
            ] {
                if given {
                    errors.push((
                        key.to_owned(),
                        format!("`{key}` applies only to `policy: cross-origin`"),
                    ));
                }
            }
            return if errors.is_empty() {
                Ok(Self::default())
            } else {
                Err(errors)
            };
        }
        let allow = options.allow.clone().unwrap_or_default();
        if let Some(origins) = &allow.origins {
            for (index, origin) in origins.iter().enumerate() {
                if HeaderValue::from_str(origin).is_err() || origin.is_empty() {
                    errors.push((
                        format!("allow.origins[{index}]"),
                        format!("`{origin}` is not an origin such as https://example.com"),
                    ));
                }
            }
        }
        let methods = joined(
            allow.methods.as_deref(),
            "allow.methods",
            &mut errors,
            |m| Method::from_bytes(m.as_bytes()).is_ok(),
        );
        let headers = joined(
            allow.headers.as_deref(),
            "allow.headers",
            &mut errors,
            |h| HeaderName::from_bytes(h.as_bytes()).is_ok(),
        );
        let expose = joined(
            options.expose.as_ref().and_then(|e| e.headers.as_deref()),
            "expose.headers",
            &mut errors,
            |h| HeaderName::from_bytes(h.as_bytes()).is_ok(),
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            cross: Some(CrossOrigin {
                origins: allow.origins,
                methods,
                headers,
                credentials: allow.credentials.unwrap_or(false),
                max_age: options.max_age.map(HeaderValue::from),
                expose,
            }),
        })
    }

    /// What the policy says about the request `parts`.
    pub(crate) fn check(&self, parts: &Parts) -> CorsCheck {
        let Some(cross) = &self.cross else {
            return CorsCheck::Pass { allow_origin: None };
        };
        let Some(origin) = parts.headers.get(header::ORIGIN) else {
            return CorsCheck::Pass { allow_origin: None };
        };
        let text = origin.to_str().unwrap_or_default();
        let listed = match &cross.origins {
            Some(origins) => {
                if !origins.iter().any(|o| wildcard_matches(o, text, true)) {
                    return CorsCheck::Refused {
                        origin: String::from_utf8_lossy(origin.as_bytes()).into_owned(),
                    };
                }
                true
            }
            None => false,
        };
        // A wildcard cannot carry credentials (browsers reject it), so with
        // credentials the request's own origin is named.
        let allow_origin = if listed || cross.credentials {
            origin.clone()
        } else {
            HeaderValue::from_static("*")
        };
        let requested = parts.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD);
        match requested {
            Some(requested) if parts.method == Method::OPTIONS => {
                CorsCheck::Preflight(cross.preflight(parts, allow_origin, requested))
            }
            _ => CorsCheck::Pass {
                allow_origin: Some(allow_origin),
            },
        }
    }

    /// Adds the CORS headers to a response of a request that passed.
    pub(crate) fn decorate<B>(
        &self,
        response: &mut Response<B>,
        allow_origin: Option<HeaderValue>,
    ) {
        let Some(cross) = &self.cross else {
            return;
        };
        let headers = response.headers_mut();
        // Whether a response carries the headers depends on `Origin`, so
        // caches must keep the variants apart.
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        let Some(allow_origin) = allow_origin else {
            return;
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if cross.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &cross.expose {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

impl CrossOrigin {
    fn preflight(
        &self,
        parts: &Parts,
        allow_origin: HeaderValue,
        requested: &HeaderValue,
    ) -> Response<Bytes> {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        let methods = self.methods.clone().unwrap_or_else(|| requested.clone());
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
        let asked = parts.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
        if let Some(allowed) = self.headers.as_ref().or(asked) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed.clone());
        }
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(max_age) = &self.max_age {
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        response
    }
}

/// `items` joined with `, ` as one header value, after checking each with
/// `valid`; problems are recorded at `path[index]`.
fn joined(
    items: Option<&[String]>,
    path: &str,
    errors: &mut Vec<(String, String)>,
    valid: impl Fn(&str) -> bool,
) -> Option<HeaderValue> {
    let items = items?;
    for (index, item) in items.iter().enumerate() {
        if !valid(item) {
            errors.push((
                format!("{path}[{index}]"),
                format!("`{item}` is not valid here"),
            ));
        }
    }
    HeaderValue::from_str(&items.join(", ")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(yaml: &str) -> Cors {
        Cors::new(Some(&serde_yaml::from_str(yaml).unwrap())).unwrap()
    }

    fn request(method: Method, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().method(method).uri("/");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn same_origin_adds_and_refuses_nothing() {
        let cors = cors("policy: same-origin");
        let parts = request(Method::GET, &[("origin", "https://evil.example")]);
        assert!(matches!(
            cors.check(&parts),
            CorsCheck::Pass { allow_origin: None }
        ));
        let mut response = Response::new(());
        cors.decorate(&mut response, None);
        assert!(response.headers().is_empty());
    }

    #[test]
    fn same_origin_rejects_cross_origin_settings() {
        let options = serde_yaml::from_str("{policy: same-origin, max-age: 3}").unwrap();
        let errors = Cors::new(Some(&options)).unwrap_err();
        assert_eq!(errors[0].0, "max-age");
    }

    #[test]
    fn invalid_names_are_reported() {
        let options =
            serde_yaml::from_str("{policy: cross-origin, allow: {headers: ['a b']}}").unwrap();
        let errors = Cors::new(Some(&options)).unwrap_err();
        assert_eq!(errors[0].0, "allow.headers[0]");
    }

    #[test]
    fn any_origin_without_credentials_is_a_wildcard() {
        let cors = cors("policy: cross-origin");
        let parts = request(
            Method::OPTIONS,
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-one, x-two"),
            ],
        );
        let CorsCheck::Preflight(response) = cors.check(&parts) else {
            panic!("a preflight");
        };
        let headers = response.headers();
        assert_eq!(headers["access-control-allow-origin"], "*");
        assert_eq!(headers["access-control-allow-methods"], "PUT");
        assert_eq!(headers["access-control-allow-headers"], "x-one, x-two");
        assert!(!headers.contains_key("access-control-allow-credentials"));
    }

    #[test]
    fn listed_origins_are_named_and_others_refused() {
        let cors = cors(
            "policy: cross-origin\nallow: {origins: ['https://*.example.com'], credentials: true}\nexpose: {headers: [x-id]}",
        );
        let parts = request(Method::GET, &[("origin", "https://app.example.com")]);
        let CorsCheck::Pass { allow_origin } = cors.check(&parts) else {
            panic!("allowed");
        };
        let mut response = Response::new(());
        cors.decorate(&mut response, allow_origin);
        let headers = response.headers();
        assert_eq!(
            headers["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert_eq!(headers["access-control-allow-credentials"], "true");
        assert_eq!(headers["access-control-expose-headers"], "x-id");
        assert_eq!(headers["vary"], "Origin");

        let parts = request(Method::GET, &[("origin", "https://evil.example")]);
        assert!(matches!(cors.check(&parts), CorsCheck::Refused { .. }));
        let parts = request(Method::GET, &[]);
        assert!(matches!(
            cors.check(&parts),
            CorsCheck::Pass { allow_origin: None }
        ));
    }
}
