// Trailhead Outfitters: the demo shop's own script, served by Spur's collector at
// /demo/shop.js (collector/src/demo/). It is what a real shop writes around the Spur
// tracker, and it uses only the tracker's public API (README, "Sending events"):
//   - every page load passes the stored choice to spur('consent', ...);
//   - the banner's decisions go to spur('consent', ...) with the banner's evidence;
//   - the newsletter form grants marketing with spur('consent', ...) and identifies
//     the visitor with spur('identify', ...), the ticked checkbox's text as evidence.
// It is loaded before the deferred /spur.js, so the queued consent reaches the tracker
// before the tracker's first pageview.
//
// Storage: a choice that grants a purpose is kept under "trailhead_consent" in local
// storage (the tracker keeps its visitor id itself, with analytics consent only).
// "Reject all" stores nothing, so the banner asks again on the next page: without
// storage there is nothing to remember a refusal with.
(function (w, d) {
  'use strict';
  w.spur = w.spur || function () { (w.spur.q = w.spur.q || []).push(arguments); };

  var KEY = 'trailhead_consent';
  var BANNER_TEXT_ID = 'trailhead-banner-v1';
  var POLICY_VERSION = '2026-01';
  var POLICY_URL = w.location.origin + '/demo/privacy';
  var PURPOSES = ['analytics', 'marketing'];
  var choice = load();

  if (choice) {
    w.spur('consent', choice, evidence(PURPOSES, {text_id: BANNER_TEXT_ID}));
  }

  function load() {
    try {
      var c = JSON.parse(w.localStorage.getItem(KEY));
      if (c && typeof c.analytics === 'boolean' && typeof c.marketing === 'boolean') {
        return {analytics: c.analytics, marketing: c.marketing};
      }
    } catch (e) {
      // Storage blocked or garbled: ask again.
    }
    return null;
  }

  // Keeps a choice that grants something; a refusal leaves nothing behind.
  function save(c) {
    try {
      if (c.analytics || c.marketing) {
        w.localStorage.setItem(KEY, JSON.stringify(c));
      } else {
        w.localStorage.removeItem(KEY);
      }
    } catch (e) {
      // The choice then lasts for this page only.
    }
  }

  // The proof that goes with a decision: the purposes the text covered, the text
  // (or its id) and the policy it pointed to.
  function evidence(purposes, proof) {
    proof.purposes = purposes;
    proof.policy_version = POLICY_VERSION;
    proof.policy_url = POLICY_URL;
    return proof;
  }

  function $(id) { return d.getElementById(id); }

  function text(id) { return $(id).textContent.replace(/\s+/g, ' ').trim(); }

  // A decision in the banner: accept all, reject all or the ticked purposes.
  function decide(c) {
    choice = c;
    save(c);
    w.spur('consent', c, evidence(PURPOSES, {text_id: BANNER_TEXT_ID, text: text('consent-text')}));
    $('consent').hidden = true;
    renderStored();
    toast(c.analytics || c.marketing ? 'Thanks, your choice is saved.' : 'Done: nothing is stored in your browser.');
  }

  function showBanner(detailed) {
    var c = choice || {analytics: false, marketing: false};
    $('consent-analytics').checked = c.analytics;
    $('consent-marketing').checked = c.marketing;
    setDetailed(detailed);
    $('consent').hidden = false;
  }

  function setDetailed(on) {
    $('consent-choices').hidden = !on;
    d.querySelector('[data-consent="choose"]').hidden = on;
    d.querySelector('[data-consent="save"]').hidden = !on;
  }

  var toastTimer;
  function toast(message) {
    var t = $('toast');
    t.textContent = message;
    t.hidden = false;
    w.clearTimeout(toastTimer);
    toastTimer = w.setTimeout(function () { t.hidden = true; }, 3500);
  }

  function onClick(e) {
    var target = e.target.closest('[data-consent], [data-open-consent], [data-add]');
    if (!target) return;
    if (target.hasAttribute('data-open-consent')) {
      e.preventDefault();
      showBanner(true);
      return;
    }
    if (target.hasAttribute('data-add')) {
      var product = target.getAttribute('data-add');
      w.spur('track', 'add_to_basket', {product: product, price: Number(target.getAttribute('data-price'))});
      toast(product + ' is in your basket. (This demo has no checkout.)');
      return;
    }
    switch (target.getAttribute('data-consent')) {
      case 'accept': decide({analytics: true, marketing: true}); break;
      case 'reject': decide({analytics: false, marketing: false}); break;
      case 'choose': setDetailed(true); break;
      case 'save': decide({analytics: $('consent-analytics').checked, marketing: $('consent-marketing').checked}); break;
    }
  }

  function onSignUp(e) {
    e.preventDefault();
    var email = $('newsletter-email').value.trim();
    var error = $('newsletter-error');
    error.hidden = false;
    if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(email)) {
      error.textContent = 'Please enter your e-mail address.';
      return;
    }
    if (!$('newsletter-consent').checked) {
      error.textContent = 'Please tick the box to agree to receive the newsletter.';
      return;
    }
    error.hidden = true;
    var proof = evidence(['marketing'], {text: text('newsletter-consent-text')});
    choice = {analytics: !!(choice && choice.analytics), marketing: true};
    save(choice);
    w.spur('consent', choice, proof);
    w.spur('identify', {email: email, form: 'newsletter', evidence: proof});
    $('newsletter-form').hidden = true;
    $('newsletter-address').textContent = email;
    $('newsletter-thanks').hidden = false;
  }

  // "What your browser stored": every cookie and storage entry of this origin.
  function entries(kind) {
    if (kind === 'cookies') {
      return d.cookie ? d.cookie.split('; ').map(function (c) {
        var i = c.indexOf('=');
        return i < 0 ? [c, ''] : [c.slice(0, i), c.slice(i + 1)];
      }) : [];
    }
    var store;
    try { store = w[kind]; } catch (e) { return []; }
    var out = [];
    for (var i = 0; i < store.length; i++) {
      var key = store.key(i);
      out.push([key, store.getItem(key)]);
    }
    return out.sort();
  }

  function renderStored() {
    var origin = $('stored-origin');
    if (!origin) return;
    origin.textContent = w.location.origin;
    d.querySelectorAll('[data-store]').forEach(function (box) {
      var rows = entries(box.getAttribute('data-store'));
      box.setAttribute('data-count', String(rows.length));
      box.textContent = '';
      if (!rows.length) {
        var p = d.createElement('p');
        p.className = 'empty';
        p.textContent = 'Nothing stored.';
        box.appendChild(p);
        return;
      }
      var table = d.createElement('table');
      var head = table.insertRow();
      ['Name', 'Value'].forEach(function (h) {
        var th = d.createElement('th');
        th.textContent = h;
        head.appendChild(th);
      });
      rows.forEach(function (r) {
        var row = table.insertRow();
        r.forEach(function (v) {
          var code = d.createElement('code');
          code.textContent = v;
          row.insertCell().appendChild(code);
        });
      });
      box.appendChild(table);
    });
  }

  d.addEventListener('DOMContentLoaded', function () {
    d.addEventListener('click', onClick);
    var form = $('newsletter-form');
    if (form) form.addEventListener('submit', onSignUp);
    if (!choice) showBanner(false);
    renderStored();
  });
  // The tracker may write its visitor id after this script ran (it loads deferred).
  w.addEventListener('load', renderStored);
  w.addEventListener('storage', renderStored);
})(window, document);
