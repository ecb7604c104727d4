// otpd's phone app: pairing a phone (the page with <main id="pair">) and
// approving sign-ins on it (the page with <main id="app">).
//
// Plain ES2020: no libraries, no build step, no inline handlers (the pages'
// Content-Security-Policy is script-src 'self'). Every text comes from the
// page (data-text-* attributes and the <template>), so the server chooses
// the language and all texts live in the templates.
//
// The API (POST, JSON) is described in otpd/src/web/approve/; WebAuthn and
// Web Push deal in bytes, the API in base64url strings: the two helpers
// below convert between them.
'use strict';

const APP_TOKEN_KEY = 'otpd-app-token';
const VAPID_KEY_KEY = 'otpd-vapid-key';
// Every 5 s: 12 of the 60 requests a minute the pages allow one address,
// so that phones behind one address (an office, a mobile carrier's NAT)
// leave room for each other and for the approvals themselves.
const POLL_INTERVAL_MS = 5000;
// After a busy answer (429, 5xx): twice as long, up to a minute.
const POLL_BACKOFF_MAX_MS = 60000;
// How long to wait for the service worker to become active before pairing
// goes on without push.
const WORKER_READY_MS = 10000;

// ---------------------------------------------------------------- helpers

function bytesFromBase64url(text) {
  const base64 = text.replace(/-/g, '+').replace(/_/g, '/');
  const binary = atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0)).buffer;
}

function base64urlFromBytes(buffer) {
  let binary = '';
  for (const byte of new Uint8Array(buffer)) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** An answer of the API other than 2xx: its status, sentence and outcome. */
class ApiError extends Error {
  constructor(status, answer) {
    super(typeof answer.error === 'string' ? answer.error : `HTTP ${status}`);
    this.status = status;
    this.outcome = answer.outcome;
  }
}

/** POSTs `body` as JSON to /approve/api/`path`; the JSON answer, or throws. */
async function api(path, body) {
  const response = await fetch(`/approve/api/${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
    cache: 'no-store',
  });
  let answer = {};
  try {
    answer = await response.json();
  } catch {
    // Not JSON (a proxy's error page): the status says enough.
  }
  if (!response.ok) throw new ApiError(response.status, answer);
  return answer;
}

function withTimeout(promise, ms) {
  const timeout = new Promise((resolve, reject) => {
    setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]);
}

/** Shows `text` in a status line; `outcome` goes to its data-outcome. */
function showStatus(element, text, outcome, detail) {
  element.textContent = text;
  element.dataset.outcome = outcome;
  if (detail) element.dataset.error = detail;
  else delete element.dataset.error;
  element.hidden = false;
}

/** The person closed or cancelled the passkey prompt, or it timed out. */
function isCancelled(error) {
  return error.name === 'NotAllowedError' || error.name === 'AbortError';
}

// --------------------------------------------------------------- WebAuthn

// webauthn-rs sends the options with base64url strings where the browser
// wants ArrayBuffers: the challenge, the user id and the credential ids.
function creationOptions(publicKey) {
  return {
    ...publicKey,
    challenge: bytesFromBase64url(publicKey.challenge),
    user: { ...publicKey.user, id: bytesFromBase64url(publicKey.user.id) },
    excludeCredentials: (publicKey.excludeCredentials || []).map((credential) => ({
      ...credential,
      id: bytesFromBase64url(credential.id),
    })),
  };
}

function requestOptions(publicKey) {
  return {
    ...publicKey,
    challenge: bytesFromBase64url(publicKey.challenge),
    allowCredentials: (publicKey.allowCredentials || []).map((credential) => ({
      ...credential,
      id: bytesFromBase64url(credential.id),
    })),
  };
}

// The credentials as webauthn-rs reads them: RegisterPublicKeyCredential
// and PublicKeyCredential, bytes as base64url.
function registrationJson(credential) {
  return {
    id: credential.id,
    rawId: base64urlFromBytes(credential.rawId),
    type: credential.type,
    response: {
      attestationObject: base64urlFromBytes(credential.response.attestationObject),
      clientDataJSON: base64urlFromBytes(credential.response.clientDataJSON),
    },
    extensions: {},
  };
}

function assertionJson(credential) {
  const response = credential.response;
  return {
    id: credential.id,
    rawId: base64urlFromBytes(credential.rawId),
    type: credential.type,
    response: {
      authenticatorData: base64urlFromBytes(response.authenticatorData),
      clientDataJSON: base64urlFromBytes(response.clientDataJSON),
      signature: base64urlFromBytes(response.signature),
      userHandle: response.userHandle ? base64urlFromBytes(response.userHandle) : null,
    },
    extensions: {},
  };
}

// --------------------------------------------------------------- Web Push

function pushSupported() {
  return 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;
}

/** Registers the service worker; best effort (it only matters for push). */
function registerWorker() {
  if (!('serviceWorker' in navigator)) return;
  navigator.serviceWorker
    .register('/approve/sw.js', { scope: '/approve/' })
    .catch((error) => console.warn('otpd: no service worker:', error));
}

function subscriptionJson(subscription) {
  return {
    endpoint: subscription.endpoint,
    keys: {
      p256dh: base64urlFromBytes(subscription.getKey('p256dh')),
      auth: base64urlFromBytes(subscription.getKey('auth')),
    },
  };
}

/**
 * Asks for notifications and subscribes to push with otpd's VAPID key: the
 * subscription as the API wants it, or null where push is not available
 * (no service worker or PushManager, as on an iPhone outside the home
 * screen; notifications refused; the push service unreachable). Without
 * push the phone is still paired: requests show when the app is opened.
 */
async function subscribeToPush(vapidKey) {
  if (!pushSupported()) return null;
  try {
    await navigator.serviceWorker.register('/approve/sw.js', { scope: '/approve/' });
    if ((await Notification.requestPermission()) !== 'granted') return null;
    const registration = await withTimeout(navigator.serviceWorker.ready, WORKER_READY_MS);
    const options = { userVisibleOnly: true, applicationServerKey: bytesFromBase64url(vapidKey) };
    let subscription;
    try {
      subscription = await registration.pushManager.subscribe(options);
    } catch (error) {
      // A subscription made with another key must go before a new one.
      const old = await registration.pushManager.getSubscription();
      if (!old) throw error;
      await old.unsubscribe();
      subscription = await registration.pushManager.subscribe(options);
    }
    return subscriptionJson(subscription);
  } catch (error) {
    console.warn('otpd: pairing without push:', error);
    return null;
  }
}

// ------------------------------------------------------------ pairing page

function setUpInstall() {
  const step = document.getElementById('install-step');
  const button = document.getElementById('install');
  if (matchMedia('(display-mode: standalone)').matches || navigator.standalone === true) {
    step.hidden = true; // already opened from the home screen
    return;
  }
  // Only Chromium-based browsers fire this; elsewhere the hint (the
  // browser's menu) is all there is.
  let installPrompt = null;
  window.addEventListener('beforeinstallprompt', (event) => {
    event.preventDefault();
    installPrompt = event;
    button.hidden = false;
  });
  button.addEventListener('click', async () => {
    if (!installPrompt) return;
    installPrompt.prompt();
    await installPrompt.userChoice;
    installPrompt = null;
    button.hidden = true;
  });
  window.addEventListener('appinstalled', () => {
    button.hidden = true;
  });
}

function startPairPage(main) {
  const texts = main.dataset;
  const token = texts.token;
  const button = document.getElementById('turn-on');
  const nameField = document.getElementById('phone-name');
  const status = document.getElementById('status');
  setUpInstall();
  registerWorker();
  if (!window.PublicKeyCredential) {
    showStatus(status, texts.textNoPasskeys, 'error');
    button.disabled = true;
    return;
  }
  button.addEventListener('click', async () => {
    button.disabled = true;
    showStatus(status, texts.textPairing, 'working');
    try {
      const begin = await api('pair/begin', { token });
      let credential;
      try {
        credential = await navigator.credentials.create({
          publicKey: creationOptions(begin.publicKey),
        });
      } catch (error) {
        if (!isCancelled(error)) throw error;
        showStatus(status, texts.textPairCancelled, 'error', error.message);
        button.disabled = false;
        return;
      }
      const push = await subscribeToPush(begin.vapid_key);
      const body = { token, credential: registrationJson(credential), push };
      // A device name holds letters, digits, '.', '_' and '-' (it is typed
      // in `otpd remove USER --device NAME`): "Pixel 8" becomes "Pixel-8".
      const name = nameField.value.trim().replace(/\s+/g, '-');
      if (name) body.name = name;
      const finish = await api('pair/finish', body);
      localStorage.setItem(APP_TOKEN_KEY, finish.app_token);
      localStorage.setItem(VAPID_KEY_KEY, begin.vapid_key);
      location.assign('/approve/');
    } catch (error) {
      showStatus(status, texts.textPairFailed, 'error', error.message);
      button.disabled = false;
    }
  });
}

// ---------------------------------------------------------------- app page

class ApproveApp {
  constructor(main, appToken) {
    this.texts = main.dataset;
    this.appToken = appToken;
    this.lang = document.documentElement.lang || undefined;
    this.list = document.getElementById('requests');
    this.empty = document.getElementById('empty');
    this.status = document.getElementById('status');
    this.offline = document.getElementById('offline');
    this.inactive = document.getElementById('inactive');
    this.template = document.getElementById('request-template');
    this.sections = new Map(); // request id (as text) → its <section>
    this.answered = new Set(); // ids answered here: a late poll must not bring them back
    this.timer = null;
    this.polling = false;
    this.stopped = false;
  }

  start() {
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.poll();
    });
    this.poll();
  }

  /** Asks for the pending requests; again in 2 s while the page is visible. */
  async poll() {
    clearTimeout(this.timer);
    if (this.polling || this.stopped || document.visibilityState !== 'visible') return;
    this.polling = true;
    try {
      const answer = await api('requests', { app_token: this.appToken });
      this.offline.hidden = true;
      this.wait = POLL_INTERVAL_MS;
      this.show(answer);
    } catch (error) {
      if (error instanceof ApiError && error.status === 403) {
        // The phone was removed (otpd remove USER --device NAME).
        this.stopped = true;
        document.getElementById('not-paired').hidden = false;
        this.show({ requests: [], active: true });
        this.empty.hidden = true;
      } else {
        // A network error says "offline"; a busy server (429, 5xx) is asked
        // again, later each time.
        this.offline.hidden = error instanceof ApiError;
        this.wait = Math.min((this.wait || POLL_INTERVAL_MS) * 2, POLL_BACKOFF_MAX_MS);
      }
    } finally {
      this.polling = false;
    }
    if (!this.stopped) this.timer = setTimeout(() => this.poll(), this.wait || POLL_INTERVAL_MS);
  }

  /** Adds new requests and removes gone ones; leaves the others as they are. */
  show(answer) {
    const requests = Array.isArray(answer.requests) ? answer.requests : [];
    const listed = new Set();
    for (const request of requests) {
      const id = String(request.id);
      listed.add(id);
      if (this.sections.has(id) || this.answered.has(id)) continue;
      const section = this.requestSection(request);
      this.sections.set(id, section);
      this.list.append(section);
    }
    for (const [id, section] of this.sections) {
      if (!listed.has(id) && !section.classList.contains('busy')) this.close(id);
    }
    this.empty.hidden = this.sections.size > 0;
    this.inactive.hidden = answer.active !== false;
  }

  requestSection(request) {
    const section = this.template.content.firstElementChild.cloneNode(true);
    const find = (selector) => section.querySelector(selector);
    section.dataset.id = String(request.id);
    for (const field of ['user', 'host', 'service', 'source']) {
      const value = find(`.${field}`);
      const text = request[field] === undefined || request[field] === null ? '' : String(request[field]);
      if (text) value.textContent = text;
      else {
        // A test request has no source: no empty row.
        value.previousElementSibling.remove();
        value.remove();
      }
    }
    const at = new Date(request.time * 1000);
    if (Number.isFinite(at.getTime())) {
      const time = find('.time');
      time.dateTime = at.toISOString();
      time.textContent = at.toLocaleTimeString(this.lang, {
        hour: '2-digit',
        minute: '2-digit',
        second: '2-digit',
      });
    }

    const choices = Array.isArray(request.choices) ? request.choices : [];
    find(request.test ? '.request-heading' : '.test-heading').remove();
    if (request.test && choices.length === 1) {
      // The test request sent when pairing: as in the manuals, one
      // "Approve" button (it carries the one number there is).
      for (const selector of ['.choose', '.numbers', '.not-me-label']) find(selector).remove();
      const approve = find('button.approve');
      approve.classList.add('number');
      approve.dataset.number = String(choices[0]);
      approve.addEventListener('click', () => this.approve(request, section, choices[0]));
    } else {
      find('.test-text').remove();
      find('button.approve').remove();
      const numbers = find('.numbers');
      for (const number of choices) {
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'number';
        button.dataset.number = String(number);
        button.textContent = String(number);
        button.addEventListener('click', () => this.approve(request, section, number));
        numbers.append(button);
      }
    }
    const notMe = find('.not-me');
    find('button.deny').addEventListener('click', () =>
      this.deny(request, section, notMe !== null && notMe.checked),
    );
    return section;
  }

  setBusy(section, busy) {
    section.classList.toggle('busy', busy);
    for (const control of section.querySelectorAll('button, input')) control.disabled = busy;
  }

  /** A number chosen: approve/begin, the passkey (user verification), approve/finish. */
  async approve(request, section, number) {
    this.setBusy(section, true);
    showStatus(this.status, this.texts.textConfirm, 'working');
    try {
      const begin = await api('approve/begin', {
        app_token: this.appToken,
        request: request.id,
        number,
      });
      let credential;
      try {
        credential = await navigator.credentials.get({ publicKey: requestOptions(begin.publicKey) });
      } catch (error) {
        if (!isCancelled(error)) throw error;
        showStatus(this.status, this.texts.textNotConfirmed, 'error', error.message);
        this.setBusy(section, false);
        return;
      }
      const finish = await api('approve/finish', {
        app_token: this.appToken,
        request: request.id,
        credential: assertionJson(credential),
      });
      const outcome = finish.outcome || 'approved';
      const text = request.test ? this.texts.textTestApproved : this.texts.textApproved;
      showStatus(this.status, outcome === 'approved' ? text : this.texts.textError, outcome);
      this.close(String(request.id));
    } catch (error) {
      this.failed(error, request, section);
    }
  }

  /** "Deny", with or without "This wasn't me". */
  async deny(request, section, notMe) {
    this.setBusy(section, true);
    try {
      await api('deny', { app_token: this.appToken, request: request.id, not_me: notMe });
      const text = notMe ? this.texts.textDeniedNotMe : this.texts.textDenied;
      showStatus(this.status, text, 'denied');
      this.close(String(request.id));
    } catch (error) {
      this.failed(error, request, section);
    }
  }

  failed(error, request, section) {
    const id = String(request.id);
    if (error instanceof ApiError && error.outcome === 'wrong_number') {
      showStatus(this.status, this.texts.textWrongNumber, 'wrong_number', error.message);
      this.close(id);
    } else if (error instanceof ApiError && (error.status === 404 || error.status === 409)) {
      showStatus(this.status, this.texts.textClosed, 'error', error.message);
      this.close(id);
    } else {
      showStatus(this.status, this.texts.textError, 'error', error.message);
      this.setBusy(section, false);
    }
  }

  /** Removes a request from the page and its notification from the phone. */
  close(id) {
    const section = this.sections.get(id);
    if (section) section.remove();
    this.sections.delete(id);
    this.answered.add(id);
    this.empty.hidden = this.sections.size > 0;
    if ('serviceWorker' in navigator) {
      navigator.serviceWorker
        .getRegistration('/approve/')
        .then((registration) => registration && registration.getNotifications({ tag: id }))
        .then((notifications) => (notifications || []).forEach((n) => n.close()))
        .catch(() => {});
    }
  }
}

/**
 * Where push is on, sends the phone's current subscription again (browsers
 * renew them); where it is not, says that requests show when the app is
 * opened, and offers to turn notifications on when the browser can.
 */
async function offerPush(appToken) {
  const box = document.getElementById('no-push');
  const button = document.getElementById('enable-push');
  const vapidKey = localStorage.getItem(VAPID_KEY_KEY);
  if (pushSupported() && Notification.permission === 'granted') {
    try {
      const registration = await navigator.serviceWorker.getRegistration('/approve/');
      const subscription = registration && (await registration.pushManager.getSubscription());
      if (subscription) {
        await api('push', { app_token: appToken, push: subscriptionJson(subscription) });
        return;
      }
    } catch (error) {
      console.warn('otpd: could not renew the push subscription:', error);
      return;
    }
  }
  box.hidden = false;
  if (!pushSupported() || Notification.permission === 'denied' || !vapidKey) return;
  button.hidden = false;
  button.addEventListener('click', async () => {
    button.disabled = true;
    const push = await subscribeToPush(vapidKey);
    try {
      if (push) {
        await api('push', { app_token: appToken, push });
        box.hidden = true;
      }
    } catch (error) {
      console.warn('otpd: could not register the push subscription:', error);
    }
    button.disabled = false;
  });
}

function startAppPage() {
  const appToken = localStorage.getItem(APP_TOKEN_KEY);
  if (!appToken) {
    document.getElementById('not-paired').hidden = false;
    return;
  }
  registerWorker();
  offerPush(appToken);
  new ApproveApp(document.getElementById('app'), appToken).start();
}

// ------------------------------------------------------------------ start

const pairMain = document.getElementById('pair');
if (pairMain) startPairPage(pairMain);
else if (document.getElementById('app')) startAppPage();
