// Spur tracker. Served minified by the collector at /spur.js (comments and
// whitespace are stripped at start-up by collector/src/tracker.rs: keep every
// statement terminated with a semicolon; short names keep it under 2 KB).
// Embed: <script defer src="https://collect.example/spur.js" data-site="SITE"></script>
// API (queue calls before load with: window.spur=window.spur||function(){(spur.q=spur.q||[]).push(arguments)}):
//   spur('consent', {analytics: bool, marketing: bool}, evidence)  from the site's banner
//   spur('identify', {email: ..., form: ..., evidence: ...})       on a form submission
//   spur('track', name, props)                                     a custom event
//   spur('pageview')                                               a virtual pageview
// Before analytics consent nothing is written to cookies or storage and no visitor id
// is sent; the collector then uses its cookieless daily id. SPA navigations through
// history.pushState and popstate are pageviews. Engaged time (visible time)
// and scroll depth go out with sendBeacon when the page is hidden or left. Page topics
// come from <meta name="spur:topics" content="a,b">.
(function (w, d, n) {
// s: this script; S: site id; A: batch endpoint; K/C: storage keys (visitor id, consent)
var s = d.currentScript, S = s && s.getAttribute('data-site'), L = location;
if (!S) return;
var A = new URL(s.src).origin + '/v1/batch', K = 'spur_vid', C = 'spur_c';
// st: localStorage; v: visitor id; c: consent; u: current page URL;
// t0: when the page became visible; e: engaged ms not yet sent; y: max scroll %
var st, v, c = {}, u, t0 = 0, e = 0, y = 0, G = ['withdrawn', 'granted'];
function now() { return Date.now(); }
function on(t, x, f, o) { t.addEventListener(x, f, o); }
// 128 random bits as digits, padded: always 32-40 characters, a valid event or
// visitor id (the collector refuses ids shorter than 8).
function rid() { return crypto.getRandomValues(new Uint32Array(4)).join('').padStart(32, '0'); }
try { st = w.localStorage; v = st.getItem(K); if (v) c = JSON.parse(st.getItem(C)) || c; } catch (x) {}
// Sends one event; engagement goes by sendBeacon (survives unload), the rest by fetch
// (.catch(Object) swallows network errors: Object(err) returns without throwing).
function ev(t, x, p) {
var o = Object.assign({type: t, id: rid(), ts: now(), url: p || L.href}, x), b = JSON.stringify({site: S, consent: c, visitor_id: v || null, sent_at: now(), events: [o]});
if (!(t == 'engagement' && n.sendBeacon && n.sendBeacon(A, new Blob([b], {type: 'text/plain'})))) fetch(A, {method: 'POST', body: b, keepalive: 1}).catch(Object);
}
function fl() {
if (t0) e += now() - t0;
t0 = d.hidden ? 0 : now();
if (e && u) ev('engagement', {engaged_ms: e, scroll_pct: y}, u);
e = 0;
}
function pv() {
var h = L.href, m = d.querySelector('meta[name="spur:topics"]');
if (h == u) return;
if (u) fl();
u = h; y = 0; t0 = d.hidden ? 0 : now();
ev('pageview', {referrer: d.referrer, title: d.title, topics: m ? m.content.split(',') : []});
}
on(d, 'visibilitychange', function () { if (d.hidden) fl(); else t0 = now(); });
on(w, 'pagehide', fl);
on(w, 'popstate', pv);
on(w, 'scroll', function () { y = Math.max(y, Math.min(100, Math.round(100 * (w.scrollY + w.innerHeight) / d.documentElement.scrollHeight))); }, {passive: 1});
// pushState is a navigation; replaceState usually only tidies the URL, so it is not.
var H = history, P = H.pushState;
H.pushState = function () { var r = P.apply(this, arguments); pv(); return r; };
function f(k, a, b) {
if (k == 'consent') {
var an = !!a.analytics, mk = !!a.marketing;
if (an == !!c.analytics && mk == !!c.marketing) return;
c = {analytics: an, marketing: mk};
try { if (an) { v = v || rid(); st.setItem(K, v); st.setItem(C, JSON.stringify(c)); } } catch (x) {}
ev('consent', {purposes: {analytics: G[+an], marketing: G[+mk]}, evidence: b});
if (!an) { v = 0; if (st) st.removeItem(K), st.removeItem(C); }
} else if (k == 'identify') ev('identify', a);
else if (k == 'track') ev('custom', {name: a, props: b});
else if (k == 'pageview') pv();
}
var q = (w.spur && w.spur.q) || [], i = 0;
w.spur = f;
for (; i < q.length; i++) f.apply(0, q[i]);
pv();
})(window, document, navigator);
