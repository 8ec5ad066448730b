// Spur tracker. Served minified by the collector at /spur.js (comments and
// whitespace are stripped at start-up by collector/src/tracker.rs: keep every
// statement terminated with a semicolon).
// Embed: <script defer src="https://collect.example/spur.js" data-site="SITE"></script>
// API (queue calls before load with: window.spur=window.spur||function(){(spur.q=spur.q||[]).push(arguments)}):
//   spur('consent', {analytics: bool, marketing: bool}, evidence)  from the site's banner
//   spur('identify', {email: ..., form: ..., evidence: ...})       on a form submission
//   spur('track', name, props)                                     a custom event
//   spur('pageview')                                               a virtual pageview
// Before analytics consent nothing is written to cookies or storage and no visitor id
// is sent; the collector then uses its cookieless daily id. SPA navigations through
// history.pushState/replaceState/popstate are pageviews. Engaged time (visible time)
// and scroll depth go out with sendBeacon when the page is hidden or left. Page topics
// come from <meta name="spur:topics" content="a,b">.
(function (w, d, n) {
var s = d.currentScript, site = s && s.getAttribute('data-site');
if (!site) return;
var api = new URL(s.src).origin + '/v1/batch', K = 'spur_vid', C = 'spur_consent', L = location;
var st, vid, cs = {}, last, shown = 0, eng = 0, scr = 0;
function on(t, e, f, o) { t.addEventListener(e, f, o); }
function vis() { return d.visibilityState == 'visible'; }
function rid() { return Array.from(crypto.getRandomValues(new Uint8Array(16)), function (b) { return (b + 256).toString(16).slice(1); }).join(''); }
try { st = w.localStorage; vid = st.getItem(K); if (vid) cs = JSON.parse(st.getItem(C)) || cs; } catch (e) {}
function send(evs, beacon) {
var b = JSON.stringify({site: site, consent: cs, visitor_id: vid || void 0, sent_at: Date.now(), events: evs});
if (!(beacon && n.sendBeacon && n.sendBeacon(api, new Blob([b], {type: 'text/plain'})))) fetch(api, {method: 'POST', body: b, keepalive: true}).catch(function () {});
}
function ev(t, x, u) {
var e = {type: t, id: rid(), ts: Date.now(), url: u || L.href};
for (var k in x) e[k] = x[k];
send([e], t == 'engagement');
}
function flush() {
if (shown) eng += Date.now() - shown;
shown = vis() ? Date.now() : 0;
if (eng > 0 && last) ev('engagement', {engaged_ms: eng, scroll_pct: scr}, last);
eng = 0;
}
function pv() {
var u = L.href, m = d.querySelector('meta[name="spur:topics"]');
if (u == last) return;
if (last) flush();
last = u; scr = 0; shown = vis() ? Date.now() : 0;
ev('pageview', {referrer: d.referrer || void 0, title: d.title, topics: m ? m.content.split(',').map(function (t) { return t.trim(); }).filter(Boolean) : []});
}
on(d, 'visibilitychange', function () { if (vis()) shown = Date.now(); else flush(); });
on(w, 'pagehide', flush);
on(w, 'popstate', pv);
on(w, 'scroll', function () {
var p = Math.min(100, Math.round(100 * (w.scrollY + w.innerHeight) / d.documentElement.scrollHeight));
if (p > scr) scr = p;
}, {passive: true});
['pushState', 'replaceState'].forEach(function (f) {
var o = history[f];
history[f] = function () { var r = o.apply(this, arguments); pv(); return r; };
});
function spur(c, a, b) {
if (c == 'consent') {
var an = !!a.analytics, mk = !!a.marketing;
if (an == !!cs.analytics && mk == !!cs.marketing) return;
cs = {analytics: an, marketing: mk};
try { if (an) { vid = vid || rid(); st.setItem(K, vid); st.setItem(C, JSON.stringify(cs)); } } catch (e) {}
ev('consent', {purposes: {analytics: an ? 'granted' : 'withdrawn', marketing: mk ? 'granted' : 'withdrawn'}, evidence: b});
if (!an) { vid = 0; try { st.removeItem(K); st.removeItem(C); } catch (e) {} }
} else if (c == 'identify') ev('identify', a);
else if (c == 'track') ev('custom', {name: a, props: b});
else if (c == 'pageview') pv();
}
var q = (w.spur && w.spur.q) || [];
w.spur = spur;
for (var i = 0; i < q.length; i++) spur.apply(0, q[i]);
pv();
})(window, document, navigator);
