// otpd's phone app service worker (scope /approve/): shows the sign-in
// requests otpd pushes (RFC 8030 / 8291, decrypted by the browser) and
// opens the app when one is tapped. It caches nothing: approving needs the
// server anyway, and a stale app page would be worse than none.
'use strict';

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

// Payload: { id, title, body, lang } (never the number). A push must show
// a notification (userVisibleOnly), so a payload that cannot be read still
// shows one that opens the app.
self.addEventListener('push', (event) => {
  let payload = {};
  try {
    payload = event.data ? event.data.json() : {};
  } catch {
    // Not JSON: the defaults below.
  }
  const text = (value) => (typeof value === 'string' ? value : '');
  const options = {
    body: text(payload.body),
    tag: payload.id === undefined || payload.id === null ? 'otpd' : String(payload.id),
    lang: text(payload.lang),
    icon: '/approve/icon-192.png',
    data: { url: '/approve/' },
  };
  event.waitUntil(self.registration.showNotification(text(payload.title) || 'otpd', options));
});

// Focus the app when it is open, or open it.
self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const url = new URL('/approve/', self.location.origin);
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
      const app = windows.find((client) => new URL(client.url).pathname === url.pathname);
      if (app) return app.focus();
      return self.clients.openWindow(url.href);
    })(),
  );
});
