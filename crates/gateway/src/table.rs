//! The route table: routes compiled from their specs, matched on host, method and path.
//!
//! A table is immutable; a change builds a whole new one, swapped in atomically
//! (`ArcSwap`), so a request sees either the old table or the new one, never half of each.
//! Routes are tried most specific first: more literal segments, then more parameters, a
//! `{*rest}` last; a route with hosts before one without, with methods before one without;
//! then by name. The first that matches wins.

use crate::upstream::{HealthBoard, Pool, Probe, Target};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use switchyard_manifest::{PathPattern, RouteSpec, Segment};

/// Where each service of the system listens: name -> base URLs (the dev runner's ports, or
/// `serve --service name=url`).
pub type Services = BTreeMap<String, Vec<String>>;

/// What route tables share and keep across swaps: upstream health, rate limiters, JWKS
/// caches; whether quotas can be counted (a store is configured); and the secrets given
/// in place of environment variables.
#[derive(Default)]
pub struct Boards {
    pub health: HealthBoard,
    pub rates: crate::limits::RateBoard,
    pub jwks: crate::auth::JwksBoard,
    pub quotas: bool,
    pub secrets: BTreeMap<String, String>,
}

impl std::fmt::Debug for Boards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets' values.
        f.debug_struct("Boards")
            .field("quotas", &self.quotas)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Boards {
    /// The value of `var`: a secret given to the gateway, else the process environment.
    pub fn var(&self, var: &str) -> Result<String, String> {
        match self.secrets.get(var) {
            Some(v) => Ok(v.clone()),
            None => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
            }
        }
    }
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    pub spec: RouteSpec,
    pattern: PathPattern,
    /// Lower case; `*.example.com` as the suffix `.example.com`.
    hosts: Vec<String>,
    methods: Vec<http::Method>,
    pub pool: Pool,
    pub timeout: Duration,
    pub auth: Option<crate::auth::Auth>,
    pub rate: Option<Arc<crate::limits::RouteRate>>,
    /// A composed route's parts and merge.
    pub compose: Option<crate::compose::Compose>,
}

/// What a match captured.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Captures<'a> {
    pub params: Vec<(&'a str, &'a str)>,
}

impl Route {
    /// Compiles a spec already validated; a service the directory does not know is an
    /// error naming it.
    pub fn compile(spec: RouteSpec, services: &Services, boards: &Boards) -> Result<Self, String> {
        let health = &boards.health;
        let pattern = PathPattern::parse(&spec.path).map_err(|e| format!("path {e}"))?;
        let health_of = |url: &str| spec.health.as_ref().map(|h| health.get(url, &h.path));
        let targets: Vec<Target> = match &spec.service {
            _ if spec.compose.is_some() => Vec::new(),
            Some(s) => {
                let urls = services.get(s).ok_or_else(|| {
                    format!(
                        "service {s:?} is unknown here (services: {})",
                        if services.is_empty() {
                            "none".to_string()
                        } else {
                            services.keys().cloned().collect::<Vec<_>>().join(", ")
                        }
                    )
                })?;
                urls.iter()
                    .map(|u| Target::new(u, 1, health_of(u)))
                    .collect::<Result<_, _>>()?
            }
            None => spec
                .upstreams
                .iter()
                .map(|u| Target::new(&u.url, u.weight, health_of(&u.url)))
                .collect::<Result<_, _>>()?,
        };
        let hosts = spec
            .hosts
            .iter()
            .map(|h| h.to_ascii_lowercase().trim_start_matches('*').to_string())
            .collect();
        let mut methods: Vec<http::Method> = spec
            .methods
            .iter()
            .map(|m| {
                http::Method::from_bytes(m.as_bytes()).map_err(|e| format!("method {m:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let compose = spec
            .compose
            .as_ref()
            .map(|c| crate::compose::Compose::compile(c, spec.request_timeout(), services))
            .transpose()?;
        if compose.is_some() && methods.is_empty() {
            methods = vec![http::Method::GET, http::Method::HEAD];
        }
        let auth = spec
            .auth
            .as_ref()
            .map(|a| crate::auth::Auth::compile(a, boards))
            .transpose()?;
        let rate = spec
            .rate_limit
            .as_ref()
            .map(|r| boards.rates.get(&spec.name, r))
            .transpose()?;
        if spec.quota.is_some() && !boards.quotas {
            return Err("quota: this gateway has no store to count quotas in".into());
        }
        Ok(Self {
            compose,
            auth,
            rate,
            timeout: spec.request_timeout(),
            pattern,
            hosts,
            methods,
            pool: Pool::new(targets),
            spec,
        })
    }

    fn host_matches(&self, host: &str) -> bool {
        self.hosts.is_empty()
            || self.hosts.iter().any(|h| {
                if h.starts_with('.') {
                    host.len() > h.len() && host.ends_with(h.as_str())
                } else {
                    host == h
                }
            })
    }

    /// Matches `path` (no query) and captures the parameters.
    pub fn match_path<'a>(&'a self, path: &'a str) -> Option<Captures<'a>> {
        let mut caps = Captures::default();
        let mut rest = path.strip_prefix('/')?;
        for seg in &self.pattern.segments {
            match seg {
                Segment::Rest(name) => {
                    caps.params.push((name.as_str(), rest));
                    return Some(caps);
                }
                Segment::Literal(lit) => {
                    let (head, tail) = split_segment(rest)?;
                    if head != lit {
                        return None;
                    }
                    rest = tail;
                }
                Segment::Param(name) => {
                    let (head, tail) = split_segment(rest)?;
                    if head.is_empty() {
                        return None;
                    }
                    caps.params.push((name.as_str(), head));
                    rest = tail;
                }
            }
        }
        // All segments used: the path must end here (one trailing slash allowed).
        (rest.is_empty()).then_some(caps)
    }

    /// The path to forward (no query), from the request's path and the captures, appended
    /// to `out` (the upstream's base URL: no string of its own per request).
    pub fn forward_path(&self, path: &str, caps: &Captures<'_>, out: &mut String) {
        if let Some(template) = &self.spec.rewrite {
            out.push_str(&fill_template(template, |name| {
                caps.params
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| *v)
            }));
        } else if self.spec.strip_prefix {
            out.push('/');
            out.push_str(caps.params.last().map(|(_, v)| *v).unwrap_or_default());
        } else {
            out.push_str(path);
        }
    }

    /// The sort key: most specific first.
    fn rank(
        &self,
    ) -> (
        std::cmp::Reverse<usize>,
        std::cmp::Reverse<usize>,
        bool,
        bool,
        bool,
    ) {
        let literals = self
            .pattern
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        let params = self
            .pattern
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Param(_)))
            .count();
        (
            std::cmp::Reverse(literals),
            std::cmp::Reverse(params),
            self.pattern.has_rest(),
            self.hosts.is_empty(),
            self.methods.is_empty(),
        )
    }
}

/// `template` with each `{name}` replaced by `value(name)` (nothing when it has none).
pub(crate) fn fill_template<'a>(template: &str, value: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c);
        if let Some(v) = value(&rest[open + 1..close]) {
            out.push_str(v);
        }
        rest = rest.get(close + 1..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// `a/b/c` -> (`a`, `b/c`); `a` -> (`a`, ``); `` -> None.
fn split_segment(path: &str) -> Option<(&str, &str)> {
    if path.is_empty() {
        return None;
    }
    Some(match path.find('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (path, ""),
    })
}

/// A whole route table.
#[derive(Debug, Default)]
pub struct Table {
    routes: Vec<Arc<Route>>,
    /// Routes that did not compile (a service unknown here), by name, with why.
    pub broken: BTreeMap<String, String>,
}

impl Table {
    /// Builds the table of `specs`. A route that does not compile is left out and named in
    /// `broken`.
    pub fn build(
        specs: impl IntoIterator<Item = RouteSpec>,
        services: &Services,
        boards: &Boards,
    ) -> Self {
        let mut routes = Vec::new();
        let mut broken = BTreeMap::new();
        for spec in specs {
            let name = spec.name.clone();
            match Route::compile(spec, services, boards) {
                Ok(r) => routes.push(Arc::new(r)),
                Err(e) => {
                    broken.insert(name, e);
                }
            }
        }
        routes.sort_by(|a, b| {
            a.rank()
                .cmp(&b.rank())
                .then_with(|| a.spec.name.cmp(&b.spec.name))
        });
        let limited: HashSet<&str> = routes
            .iter()
            .filter(|r| r.rate.is_some())
            .map(|r| r.spec.name.as_str())
            .collect();
        boards.rates.retain(&limited);
        boards.jwks.retain_used();
        Self { routes, broken }
    }

    /// The first route for `host` (without port, lower case), `method` and `path`.
    pub fn find<'a>(
        &'a self,
        host: &str,
        method: &http::Method,
        path: &'a str,
    ) -> Option<(&'a Arc<Route>, Captures<'a>)> {
        self.routes.iter().find_map(|r| {
            if !r.host_matches(host) || (!r.methods.is_empty() && !r.methods.contains(method)) {
                return None;
            }
            r.match_path(path).map(|c| (r, c))
        })
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// What the health checker should probe for this table.
    pub fn probes(&self) -> Vec<Probe> {
        let mut out: Vec<Probe> = Vec::new();
        for r in &self.routes {
            let Some(spec) = &r.spec.health else { continue };
            for t in &r.pool.targets {
                let Some(h) = &t.health else { continue };
                if out.iter().any(|p| Arc::ptr_eq(&p.health, h)) {
                    continue;
                }
                out.push(Probe {
                    health: h.clone(),
                    url: t.url.clone(),
                    spec: spec.clone(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, path: &str, extra: &str) -> RouteSpec {
        toml::from_str(&format!(
            "name = \"{name}\"\npath = \"{path}\"\nupstreams = [{{ url = \"http://127.0.0.1:1\" }}]\n{extra}"
        ))
        .unwrap()
    }

    fn table(specs: Vec<RouteSpec>) -> Table {
        Table::build(specs, &Services::new(), &Boards::default())
    }

    fn hit(t: &Table, host: &str, method: &str, path: &str) -> Option<String> {
        let m = http::Method::from_bytes(method.as_bytes()).unwrap();
        t.find(host, &m, path).map(|(r, c)| {
            let mut out = format!("{} ", r.spec.name);
            r.forward_path(path, &c, &mut out);
            out
        })
    }

    #[test]
    fn the_most_specific_route_wins() {
        let t = table(vec![
            spec("all", "/{*rest}", ""),
            spec("api", "/api/{*rest}", "strip-prefix = true"),
            spec(
                "order",
                "/api/orders/{id}",
                "rewrite = \"/orders/{id}/view\"",
            ),
            spec("order-post", "/api/orders/{id}", "methods = [\"POST\"]"),
            spec("admin", "/api/{*rest}", "hosts = [\"admin.example.com\"]"),
            spec("wild", "/w", "hosts = [\"*.example.com\"]"),
        ]);
        assert_eq!(
            hit(&t, "x", "GET", "/api/orders/42").unwrap(),
            "order /orders/42/view"
        );
        assert_eq!(
            hit(&t, "x", "POST", "/api/orders/42").unwrap(),
            "order-post /api/orders/42"
        );
        assert_eq!(
            hit(&t, "x", "GET", "/api/orders/42/items").unwrap(),
            "api /orders/42/items"
        );
        assert_eq!(hit(&t, "x", "GET", "/api").unwrap(), "api /");
        assert_eq!(
            hit(&t, "admin.example.com", "GET", "/api/x").unwrap(),
            "admin /api/x"
        );
        assert_eq!(hit(&t, "x", "GET", "/apix").unwrap(), "all /apix");
        assert_eq!(hit(&t, "a.example.com", "GET", "/w").unwrap(), "wild /w");
        assert_eq!(hit(&t, "example.com", "GET", "/w").unwrap(), "all /w");
        assert_eq!(hit(&t, "x", "GET", "/api/orders/").unwrap(), "api /orders/");
    }

    #[test]
    fn parameters_need_a_segment_and_the_path_must_end() {
        let t = table(vec![spec("one", "/a/{id}", "")]);
        assert!(hit(&t, "x", "GET", "/a/1").is_some());
        assert!(hit(&t, "x", "GET", "/a/1/").is_some(), "one trailing slash");
        assert!(hit(&t, "x", "GET", "/a/").is_none());
        assert!(hit(&t, "x", "GET", "/a/1/2").is_none());
        assert!(hit(&t, "x", "GET", "/a").is_none());
    }

    #[test]
    fn a_route_to_an_unknown_service_is_broken_not_fatal() {
        let s: RouteSpec =
            toml::from_str("name = \"a\"\npath = \"/\"\nservice = \"orders\"").unwrap();
        let t = table(vec![s, spec("b", "/b", "")]);
        assert_eq!(t.routes().len(), 1);
        assert!(t.broken["a"].contains("orders"), "{:?}", t.broken);
    }
}
