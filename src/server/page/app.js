// Fractalic Publisher's page: the deployments table, the deploy form reading the SSE stream,
// per-deployment status and logs (with a follow stream), all on this server's REST API.
// Plain DOM, no libraries; text is always set as text (never parsed as HTML).
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = 'fractalic-publisher.token';
  const REFRESH_MS = 5000;
  const MAX_LOG_CHARS = 400000;
  const FIELDS = ['plugin', 'script_folder', 'script_name', 'image_name', 'image_tag',
    'container_name', 'port', 'env_vars'];
  const STAGES = {
    validating: 'Validating', pulling_image: 'Pulling image', preparing_files: 'Preparing files',
    creating_container: 'Creating container', starting_container: 'Starting container',
    completed: 'Completed', error: 'Failed',
  };

  /** Builds an element: attributes (on* never), then children (strings become text). */
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids) {
      if (kid === null || kid === undefined) continue;
      e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return e;
  }

  // ---- Token: asked once when the server answers 401, kept for this tab. ----
  let tokenAsk = null;
  let tokenDeclined = false;
  function askToken(why) {
    if (tokenAsk) return tokenAsk;
    tokenAsk = new Promise((resolve, reject) => {
      const dlg = $('token-dlg');
      const input = $('token-input');
      $('token-why').textContent = why;
      input.value = '';
      const done = (ok) => {
        $('token-form').removeEventListener('submit', onSubmit);
        $('token-cancel').removeEventListener('click', onCancel);
        dlg.removeEventListener('cancel', onCancel);
        if (dlg.open) dlg.close();
        tokenAsk = null;
        if (!ok) tokenDeclined = true;
        ok ? resolve() : reject(new Error('this server needs a token; reload the page to enter it'));
      };
      const onSubmit = (ev) => {
        ev.preventDefault();
        const t = input.value.trim();
        if (!t) { input.focus(); return; }
        sessionStorage.setItem(TOKEN_KEY, t);
        done(true);
      };
      const onCancel = (ev) => { ev.preventDefault(); done(false); };
      $('token-form').addEventListener('submit', onSubmit);
      $('token-cancel').addEventListener('click', onCancel);
      dlg.addEventListener('cancel', onCancel);
      dlg.showModal();
      input.focus();
    });
    return tokenAsk;
  }

  /** fetch with the tab's token; a 401 asks for the token (once) and retries. */
  async function api(path, opts = {}) {
    for (let attempt = 0; ; attempt++) {
      const headers = new Headers(opts.headers || {});
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (token) headers.set('Authorization', 'Bearer ' + token);
      const r = await fetch(path, { ...opts, headers });
      if (r.status !== 401 || attempt >= 3) return r;
      // Cancelled once: do not ask again on every refresh (a reload asks again).
      if (tokenDeclined) throw new Error('this server needs a token; reload the page to enter it');
      if (token) sessionStorage.removeItem(TOKEN_KEY);
      await askToken(token
        ? 'The server refused that token. Enter the token from its --token-file.'
        : 'This server needs the token from its --token-file. It is kept for this tab only.');
    }
  }

  /** {status, detail, field} of an HTTP error answer (FastAPI's {"detail"} shape). */
  async function errorOf(r) {
    let detail = `HTTP ${r.status}: ${r.statusText}`;
    let field = null;
    try {
      const v = await r.json();
      if (v && typeof v.detail === 'string') detail = v.detail;
      if (v && typeof v.field === 'string') field = v.field;
    } catch (_) { /* not JSON: keep the status line */ }
    return { status: r.status, detail, field };
  }

  let toastTimer = null;
  function toast(text, bad) {
    const t = $('toast');
    t.textContent = text;
    t.className = 'toast' + (bad ? ' bad' : '');
    t.setAttribute('role', bad ? 'alert' : 'status');
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, bad ? 9000 : 5000);
  }

  // ---- Server status line ----
  async function health() {
    try {
      const r = await fetch('/health');
      const v = await r.json();
      const n = v.deploys_in_flight;
      $('server-status').textContent = `Server ${v.version}: ${v.status}` +
        (n ? `, ${n} deploy${n === 1 ? '' : 's'} running` : '');
    } catch (e) {
      $('server-status').textContent = 'Server not answering';
    }
  }

  // ---- Deployments table ----
  const rows = new Map();
  let refreshTimer = null;
  let selected = null;

  function badge(kind, symbol, text) {
    return el('span', { class: 'badge ' + kind }, el('span', { 'aria-hidden': 'true' }, symbol), text);
  }
  function stateBadge(s) {
    s = s || '-';
    if (s === 'running') return badge('ok', '\u25B6\uFE0E', s);
    if (s === 'exited' || s === 'created' || s === 'paused') return badge('idle', '\u25A0\uFE0E', s);
    if (s === 'restarting') return badge('warn', '\u21BB\uFE0E', s);
    return badge('bad', '\u2715\uFE0E', s);
  }
  function healthBadge(h) {
    if (!h || h === '-') return badge('idle', '\u2013', 'n/a');
    if (h === 'healthy' || h.startsWith('healthy (')) return badge('ok', '\u2713\uFE0E', h);
    if (h.startsWith('starting')) return badge('warn', '\u2026', h);
    return badge('bad', '\u2715\uFE0E', h);
  }

  function actionButton(label, name, handler, extra) {
    const b = el('button', { type: 'button', class: 'small ' + (extra || ''), 'aria-label': `${label} ${name}`, 'data-action': label.toLowerCase() }, label);
    b.addEventListener('click', () => handler(name, b));
    return b;
  }

  function makeRow(name) {
    const tr = el('tr', { 'data-name': name });
    const cells = {
      name: el('th', { scope: 'row', 'data-label': 'Name' }),
      plugin: el('td', { 'data-label': 'Platform' }),
      script: el('td', { 'data-label': 'Script' }),
      state: el('td', { 'data-label': 'State', class: 'state' }),
      health: el('td', { 'data-label': 'Health', class: 'health' }),
      url: el('td', { 'data-label': 'URL', class: 'url' }),
      age: el('td', { 'data-label': 'Age' }),
      acts: el('td', { class: 'acts' }),
    };
    const buttons = {
      details: actionButton('Details', name, (n) => openDetail(n, 'status')),
      logs: actionButton('Logs', name, (n) => openDetail(n, 'logs')),
      stop: actionButton('Stop', name, stopDeployment),
      start: actionButton('Start', name, startDeployment),
      rollback: actionButton('Roll back', name, (n, b) => rollbackDeployment(n, b, '')),
      remove: actionButton('Remove', name, removeDeployment, 'danger-text'),
    };
    cells.acts.append(...Object.values(buttons));
    tr.append(...Object.values(cells));
    return { tr, cells, buttons, busy: false };
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function updateRow(row, d) {
    const c = row.cells;
    setText(c.name, d.name);
    setText(c.plugin, d.plugin || '-');
    setText(c.script, d.script || '-');
    const key = `${d.state}|${d.health}|${d.url}`;
    if (row.key !== key) {
      row.key = key;
      c.state.replaceChildren(stateBadge(d.state));
      c.health.replaceChildren(healthBadge(d.state === 'running' ? d.health : '-'));
      c.url.replaceChildren(d.url
        ? el('a', { href: d.url, target: '_blank', rel: 'noopener noreferrer' }, d.url)
        : '-');
    }
    setText(c.age, d.age || '-');
    row.tr.dataset.state = d.state || '';
    row.tr.dataset.health = d.health || '';
    // The front proxy's row: listed for its state and health; it is managed with
    // `fractalic-publisher proxy up|down`, not with a deployment's buttons.
    row.tr.dataset.role = d.role || '';
    row.cells.acts.hidden = d.role === 'proxy';
    if (!row.busy) {
      const running = d.state === 'running';
      row.buttons.stop.disabled = !running;
      row.buttons.start.disabled = running;
    }
  }

  function renderRows(list) {
    const tbody = $('dep-rows');
    const seen = new Set();
    let prev = null;
    for (const d of list) {
      if (!d || typeof d.name !== 'string') continue;
      seen.add(d.name);
      let row = rows.get(d.name);
      if (!row) {
        row = makeRow(d.name);
        rows.set(d.name, row);
      }
      updateRow(row, d);
      // Move only what is out of place: moving a row would take the keyboard focus away.
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== row.tr) tbody.insertBefore(row.tr, want);
      row.tr.classList.toggle('selected', d.name === selected);
      prev = row.tr;
    }
    for (const [name, row] of rows) {
      if (!seen.has(name)) { row.tr.remove(); rows.delete(name); }
    }
    $('dep-empty').hidden = rows.size > 0;
    $('dep-table').hidden = rows.size === 0;
  }

  let refreshing = null;
  let refreshAgain = false;
  /** Reloads the table; a call during a reload waits for it and then reloads once more. */
  async function refresh() {
    clearTimeout(refreshTimer);
    if (refreshing) {
      refreshAgain = true;
      return refreshing;
    }
    refreshing = doRefresh();
    await refreshing;
  }
  async function doRefresh() {
    try {
      const r = await api('/api/deployments?all=' + ($('show-all').checked ? 'true' : 'false'));
      if (!r.ok) throw new Error((await errorOf(r)).detail);
      renderRows(await r.json());
      $('dep-error').textContent = '';
      $('refreshed').textContent = 'Updated ' + new Date().toLocaleTimeString();
    } catch (e) {
      $('dep-error').textContent = 'Could not list the deployments: ' + e.message;
    } finally {
      refreshing = null;
      health();
      if (refreshAgain) {
        refreshAgain = false;
        refresh();
      } else {
        refreshTimer = setTimeout(refresh, REFRESH_MS);
      }
    }
  }

  async function rowAction(name, button, label, path, method) {
    const row = rows.get(name);
    if (row) { row.busy = true; Object.values(row.buttons).forEach((b) => { b.disabled = true; }); }
    toast(`${label} ${name}\u2026`);
    try {
      const r = await api(path, { method });
      if (!r.ok) {
        const e = await errorOf(r);
        toast(`${label} ${name} failed: ${e.detail}`, true);
        return false;
      }
      return await r.json();
    } catch (e) {
      toast(`${label} ${name} failed: ${e.message}`, true);
      return false;
    } finally {
      if (row) {
        row.busy = false;
        row.key = null;
        Object.values(row.buttons).forEach((b) => { b.disabled = false; });
      }
      await refresh();
      if (selected === name) loadStatus(name);
    }
  }
  const enc = encodeURIComponent;

  async function stopDeployment(name, b) {
    const v = await rowAction(name, b, 'Stopping', `/api/deployments/${enc(name)}/stop`, 'POST');
    if (v) toast(`Stopped ${name}`);
  }
  async function startDeployment(name, b) {
    const v = await rowAction(name, b, 'Starting', `/api/deployments/${enc(name)}/start`, 'POST');
    if (v) toast(`Started ${name}: healthy` + (v.url ? ` at ${v.url}` : ''));
  }

  function confirmRemove(name, running) {
    return new Promise((resolve) => {
      const dlg = $('confirm');
      $('confirm-h').textContent = `Remove ${name}?`;
      $('confirm-text').textContent = running
        ? `${name} is running: it is stopped and its container is deleted. This cannot be undone.`
        : `The container of ${name} is deleted. This cannot be undone.`;
      $('confirm-ok').textContent = `Remove ${name}`;
      const finish = (ok) => {
        $('confirm-ok').removeEventListener('click', yes);
        $('confirm-cancel').removeEventListener('click', no);
        dlg.removeEventListener('cancel', no);
        if (dlg.open) dlg.close();
        resolve(ok);
      };
      const yes = () => finish(true);
      const no = (ev) => { if (ev) ev.preventDefault(); finish(false); };
      $('confirm-ok').addEventListener('click', yes);
      $('confirm-cancel').addEventListener('click', no);
      dlg.addEventListener('cancel', no);
      dlg.showModal();
      $('confirm-cancel').focus();
    });
  }

  async function removeDeployment(name, b) {
    const row = rows.get(name);
    const running = row ? row.tr.dataset.state === 'running' : false;
    if (!(await confirmRemove(name, running))) { b.focus(); return; }
    const v = await rowAction(name, b, 'Removing', `/api/deployments/${enc(name)}${running ? '?force=true' : ''}`, 'DELETE');
    if (v) {
      toast(`Removed ${name}`);
      if (selected === name) closeDetail();
      $('dep-h').focus();
    }
  }

  // ---- Details and logs ----
  let logAbort = null;

  function plain(v) {
    if (v === null || v === undefined || v === '') return '-';
    if (typeof v === 'object') {
      return Object.entries(v).map(([k, x]) => `${k}: ${typeof x === 'object' ? JSON.stringify(x) : x}`).join(', ');
    }
    return String(v);
  }

  /** A proxied deployment's route, upstreams (with health), replicas and the proxy's health. */
  function proxyItems(p) {
    const out = [];
    const add = (k, v) => { if (v !== undefined && v !== null && v !== '') out.push(el('dt', null, k), el('dd', null, String(v))); };
    add('route', p.route);
    add('domain', p.domain);
    add('tls', p.tls);
    if (Array.isArray(p.upstream_health)) {
      add('upstreams', p.upstream_health.map((u) => `${u.container} ${u.health}`).join(', ') || p.upstreams);
    } else add('upstreams', p.upstreams);
    if (p.replicas && typeof p.replicas === 'object') {
      add('replicas', `${p.replicas.running} of ${p.replicas.replicas} running`);
    }
    add('degraded', p.degraded);
    add('proxy', `${p.proxy}${p.proxy_health ? ': ' + p.proxy_health : ''}`);
    add('ca cert', p.ca_cert);
    return out;
  }

  async function loadStatus(name) {
    const dl = $('detail-status');
    try {
      const r = await api(`/api/deployments/${enc(name)}`);
      if (!r.ok) throw new Error((await errorOf(r)).detail);
      const v = await r.json();
      const items = [];
      for (const [k, x] of Object.entries(v)) {
        if (k === 'healthy') continue;
        if (k === 'proxy' && x && typeof x === 'object') {
          items.push(...proxyItems(x));
          continue;
        }
        const dd = (k === 'url' && x) ? el('dd', null, el('a', { href: x, target: '_blank', rel: 'noopener noreferrer' }, x)) : el('dd', null, plain(x));
        items.push(el('dt', null, k.replace(/_/g, ' ')), dd);
      }
      dl.replaceChildren(...items);
    } catch (e) {
      dl.replaceChildren(el('dt', null, 'error'), el('dd', { class: 'err' }, e.message));
    }
  }

  /** Short words for what a release changed (names only, never values). */
  function changeWords(c) {
    if (!c || typeof c !== 'object') return '-';
    const parts = [];
    for (const [k, v] of Object.entries(c)) {
      if (Array.isArray(v) && v.length) parts.push(`${k.replace(/_/g, ' ')}: ${v.join(', ')}`);
      else if (v && typeof v === 'object' && Object.keys(v).length) parts.push(k.replace(/_/g, ' '));
      else if (typeof v === 'string' && v) parts.push(`${k.replace(/_/g, ' ')}: ${v}`);
      else if (v === true) parts.push(k.replace(/_/g, ' '));
    }
    return parts.length ? parts.join('; ') : '-';
  }

  async function loadHistory(name) {
    const tbody = $('history-rows');
    const state = $('history-state');
    try {
      const r = await api(`/api/deployments/${enc(name)}/history`);
      if (!r.ok) throw new Error((await errorOf(r)).detail);
      const h = await r.json();
      const releases = Array.isArray(h.releases) ? h.releases.slice().reverse() : [];
      state.textContent = releases.length ? `Live release: ${h.current}` : 'No releases recorded.';
      tbody.replaceChildren(...releases.map((rel) => {
        const live = rel.id === h.current;
        const act = el('td', null);
        if (!live && rel.outcome === 'ok') {
          act.append(actionButton(`Roll back to ${rel.id}`, name, (n, b) => rollbackDeployment(n, b, rel.id)));
        }
        return el('tr', { 'data-release': rel.id },
          el('td', { 'data-label': 'Release' }, live ? `${rel.id} (live)` : rel.id),
          el('td', { 'data-label': 'Time' }, plain(rel.time)),
          el('td', { 'data-label': 'Kind' }, rel.of ? `${rel.kind} of ${rel.of}` : plain(rel.kind)),
          el('td', { 'data-label': 'Outcome' }, rel.error ? `${rel.outcome}: ${rel.error}` : plain(rel.outcome)),
          el('td', { 'data-label': 'Changes' }, changeWords(rel.changes)),
          act);
      }));
    } catch (e) {
      tbody.replaceChildren();
      state.textContent = `History unavailable: ${e.message}`;
    }
  }

  async function rollbackDeployment(name, b, to) {
    const q = to ? `?to=${enc(to)}` : '';
    const v = await rowAction(name, b, 'Rolling back', `/api/deployments/${enc(name)}/rollback${q}`, 'POST');
    if (v) toast(`Rolled ${name} back to ${v.of || to || 'the previous release'}` + (v.release ? ` (now ${v.release})` : ''));
    if (selected === name) loadHistory(name);
  }

  function stopFollow() {
    if (logAbort) { logAbort.abort(); logAbort = null; }
  }

  function appendLog(text) {
    const pre = $('logs');
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 24;
    pre.append(document.createTextNode(text));
    if (pre.textContent.length > MAX_LOG_CHARS) {
      pre.textContent = pre.textContent.slice(-MAX_LOG_CHARS / 2);
    }
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }

  function logQuery() {
    const q = new URLSearchParams();
    const tail = $('logs-tail').value.trim();
    if (tail !== '') q.set('tail', tail);
    const service = $('logs-service').value;
    if (service) q.set('service', service);
    return q;
  }

  async function loadLogs() {
    stopFollow();
    const name = selected;
    if (!name) return;
    const pre = $('logs');
    const state = $('logs-state');
    if ($('logs-follow').checked) return followLogs(name);
    state.textContent = 'Loading\u2026';
    try {
      const r = await api(`/api/deployments/${enc(name)}/logs?${logQuery()}`);
      if (!r.ok) throw new Error((await errorOf(r)).detail);
      const text = await r.text();
      pre.textContent = text;
      pre.scrollTop = pre.scrollHeight;
      state.textContent = text ? `Last ${$('logs-tail').value || 'all'} lines, ${new Date().toLocaleTimeString()}` : 'The log is empty.';
    } catch (e) {
      pre.textContent = '';
      state.textContent = 'Could not read the log: ' + e.message;
    }
  }

  /** Streams the log (SSE: each data line is a JSON string) until unticked or it ends. */
  async function followLogs(name) {
    const pre = $('logs');
    const state = $('logs-state');
    const ctl = new AbortController();
    logAbort = ctl;
    const q = logQuery();
    q.set('follow', 'true');
    pre.textContent = '';
    state.textContent = 'Following the log\u2026';
    pre.dataset.following = 'true';
    try {
      const r = await api(`/api/deployments/${enc(name)}/logs?${q}`, { signal: ctl.signal, headers: { Accept: 'text/event-stream' } });
      if (!r.ok) throw new Error((await errorOf(r)).detail);
      await readSse(r, (ev) => {
        if (ev.event === 'end' || ev.event === 'error') {
          let detail = ev.data;
          try { detail = JSON.parse(ev.data).detail; } catch (_) { /* keep raw */ }
          state.textContent = (ev.event === 'error' ? 'The log stream failed: ' : '') + detail;
          return true;
        }
        try { appendLog(JSON.parse(ev.data)); } catch (_) { appendLog(ev.data + '\n'); }
        return false;
      });
      if (logAbort === ctl) $('logs-follow').checked = false;
    } catch (e) {
      if (e.name !== 'AbortError') state.textContent = 'Could not follow the log: ' + e.message;
    } finally {
      if (logAbort === ctl) { logAbort = null; $('logs-follow').checked = false; }
      delete pre.dataset.following;
      if (ctl.signal.aborted && !state.textContent.startsWith('Could')) state.textContent = 'Stopped following.';
    }
  }

  function openDetail(name, focus) {
    if (selected !== name) stopFollow();
    selected = name;
    $('detail').hidden = false;
    $('detail').dataset.name = name;
    $('detail-h').textContent = name;
    for (const [n, row] of rows) row.tr.classList.toggle('selected', n === name);
    $('logs-follow').checked = false;
    loadStatus(name);
    loadLogs();
    loadHistory(name);
    const target = focus === 'logs' ? $('logs-h') : $('detail-h');
    target.scrollIntoView({ block: 'start' });
    target.focus({ preventScroll: true });
  }

  function closeDetail() {
    stopFollow();
    const name = selected;
    selected = null;
    $('detail').hidden = true;
    for (const row of rows.values()) row.tr.classList.remove('selected');
    const row = name && rows.get(name);
    if (row) row.buttons.details.focus();
  }

  // ---- SSE over fetch (EventSource cannot send the Authorization header) ----
  /** Reads `r`'s body as SSE; calls onEvent({id, event, data}) per event until it returns true. */
  async function readSse(r, onEvent) {
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let cur = { id: null, event: null, data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        if (line === '') {
          if (cur.data.length) {
            const stop = onEvent({ id: cur.id, event: cur.event, data: cur.data.join('\n') });
            if (stop) { reader.cancel().catch(() => {}); return true; }
          }
          cur = { id: null, event: null, data: [] };
        } else if (line.startsWith(':')) {
          // keep-alive comment
        } else if (line.startsWith('data:')) {
          cur.data.push(line.slice(5).replace(/^ /, ''));
        } else if (line.startsWith('id:')) {
          cur.id = line.slice(3).trim();
        } else if (line.startsWith('event:')) {
          cur.event = line.slice(6).trim();
        }
      }
    }
  }

  // ---- The deploy form ----
  function clearErrors() {
    for (const f of FIELDS) {
      const input = $('f-' + f);
      if (input) input.removeAttribute('aria-invalid');
      const e = $('e-' + f);
      if (e) e.textContent = '';
    }
    $('e-form').textContent = '';
  }

  /** The form field a server message is about: its `field` key, else the names it mentions. */
  function fieldOf(field, detail) {
    if (field && FIELDS.includes(field)) return field;
    const d = detail || '';
    const rules = [
      [/"?script_folder"?|--script-folder|settings\.toml/, 'script_folder'],
      [/"?script_name"?|--script-name|main script/, 'script_name'],
      [/"image_tag"/, 'image_tag'],
      [/"?image_name"?|--image/, 'image_name'],
      [/"?container_name"?|container name|--name/, 'container_name'],
      [/"port"|--port|\bport\b/, 'port'],
      [/env_vars|\benv\b/, 'env_vars'],
    ];
    for (const [re, f] of rules) if (re.test(d)) return f;
    return null;
  }

  function showFieldError(field, text) {
    const input = field && $('f-' + field);
    const slot = field && $('e-' + field);
    if (input && slot) {
      slot.textContent = text;
      input.setAttribute('aria-invalid', 'true');
      return input;
    }
    $('e-form').textContent = text;
    return null;
  }

  /** The request body from the form, or null after marking the fields that are wrong. */
  function formBody() {
    const v = (f) => $('f-' + f).value.trim();
    const body = {};
    const bad = [];
    if (!v('script_folder')) bad.push(['script_folder', 'Give the script folder (a folder on the server).']);
    else body.script_folder = v('script_folder');
    if (!v('script_name')) bad.push(['script_name', 'Give the main script\u2019s name, e.g. hello.']);
    else body.script_name = v('script_name');
    if (v('image_name')) body.image_name = v('image_name');
    if (v('image_tag')) {
      if (!v('image_name')) bad.push(['image_tag', 'A tag needs an image.']);
      body.image_tag = v('image_tag');
    }
    if (v('container_name')) body.container_name = v('container_name');
    if (v('port')) {
      const p = Number(v('port'));
      if (!/^\d+$/.test(v('port')) || p < 1 || p > 65535) bad.push(['port', `Port "${v('port')}" is not a number from 1 to 65535.`]);
      else body.port = p;
    }
    const env = {};
    let n = 0;
    for (const [i, raw] of $('f-env_vars').value.split('\n').entries()) {
      const line = raw.trim();
      if (!line || line.startsWith('#')) continue;
      const eq = line.indexOf('=');
      if (eq <= 0) { bad.push(['env_vars', `Line ${i + 1} is not KEY=value.`]); break; }
      env[line.slice(0, eq).trim()] = line.slice(eq + 1);
      n++;
    }
    if (n) body.env_vars = env;
    let first = null;
    for (const [f, text] of bad) {
      const input = showFieldError(f, text);
      first = first || input;
    }
    if (first) { first.focus(); return null; }
    return body;
  }

  function resetRun() {
    const run = $('run');
    run.hidden = false;
    delete run.dataset.outcome;
    $('run-events').replaceChildren();
    $('run-result').hidden = true;
    $('run-result').replaceChildren();
    setProgress(0, 'validating', 'Starting\u2026');
  }

  function setProgress(pct, stage, label) {
    const p = Math.max(0, Math.min(100, Number(pct) || 0));
    $('run-fill').style.width = p + '%';
    $('run-bar').setAttribute('aria-valuenow', String(p));
    $('run-bar').setAttribute('aria-valuetext', `${p} %, ${label || STAGES[stage] || stage}`);
    $('run-pct').textContent = p + ' %';
    const s = $('run-stage');
    s.textContent = label || STAGES[stage] || 'Unknown';
    s.dataset.stage = stage || '';
  }

  function addEventLine(e) {
    const t = (e.timestamp || '').slice(11, 23);
    const li = el('li', { class: e.type || '' },
      el('time', { datetime: e.timestamp || '' }, t),
      el('span', { class: 'st' }, STAGES[e.stage] || e.stage || ''),
      el('span', { class: 'msg' }, e.message || ''));
    const ol = $('run-events');
    ol.append(li);
    ol.scrollTop = ol.scrollHeight;
  }

  function copyButton(text) {
    const b = el('button', { type: 'button', class: 'small', 'aria-label': 'Copy the sample curl command' }, 'Copy');
    b.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText(text);
        b.textContent = 'Copied \u2713';
      } catch (_) {
        const pre = b.parentElement.querySelector('pre');
        const range = document.createRange();
        range.selectNodeContents(pre);
        const sel = getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        b.textContent = 'Selected: press Ctrl+C';
      }
      setTimeout(() => { b.textContent = 'Copy'; }, 2500);
    });
    return b;
  }

  function link(url) {
    return url ? el('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, url) : '-';
  }

  function showResult(e) {
    const box = $('run-result');
    const r = e.result || e.failure || {};
    const items = [];
    const kv = (k, v) => items.push(el('dt', null, k), el('dd', null, v));
    if (e.stage === 'completed' && r.success !== false) {
      const m = r.metadata || {};
      const ai = m.ai_server || {};
      const apiInfo = m.api || {};
      const dep = m.deployment || {};
      box.className = 'result ok';
      kv('URL', link(r.endpoint_url));
      kv('API endpoint', link(apiInfo.endpoint));
      kv('API docs', link(ai.docs_url));
      kv('Deployment', dep.container_name || '-');
      const kids = [el('h3', null, el('span', { 'aria-hidden': 'true' }, '\u2713 '), 'Deployed: ', e.message || ''), el('dl', { class: 'kv' }, ...items)];
      if (apiInfo.sample_curl) {
        kids.push(el('p', { class: 'muted' }, 'Try it:'),
          el('div', { class: 'sample' }, el('pre', { id: 'sample-curl' }, apiInfo.sample_curl), copyButton(apiInfo.sample_curl)));
      }
      box.replaceChildren(...kids);
    } else {
      box.className = 'result bad';
      kv('What failed', e.message || r.error || '-');
      if (e.error && e.error !== e.message) kv('Details', e.error);
      if (r.cleanup || r.cleaned_up) kv('Cleaned up', plain(r.cleanup || r.cleaned_up));
      box.replaceChildren(el('h3', null, el('span', { 'aria-hidden': 'true' }, '\u2715 '), 'Deploy failed'), el('dl', { class: 'kv' }, ...items));
    }
    box.hidden = false;
    box.focus({ preventScroll: true });
    box.scrollIntoView({ block: 'nearest' });
  }

  async function deploy(ev) {
    ev.preventDefault();
    clearErrors();
    const body = formBody();
    if (!body) return;
    const plugin = $('f-plugin').value || 'docker-registry';
    const btn = $('deploy-btn');
    btn.disabled = true;
    btn.textContent = 'Deploying\u2026';
    resetRun();
    let last = null;
    let lastId = null;
    let runId = null;
    const onEvent = (sse) => {
      let e;
      try { e = JSON.parse(sse.data); } catch (_) { return false; }
      if (!e || !e.deployment_id || !e.stage || typeof e.progress !== 'number') return false;
      if (sse.id) lastId = sse.id;
      runId = e.deployment_id;
      last = e;
      setProgress(e.progress, e.stage);
      addEventLine(e);
      return e.stage === 'completed' || e.stage === 'error';
    };
    try {
      const r = await api(`/api/deploy/${enc(plugin)}/stream`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream' },
        body: JSON.stringify(body),
      });
      if (!r.ok) {
        const e = await errorOf(r);
        $('run').hidden = true;
        const input = showFieldError(fieldOf(e.field, e.detail), e.detail);
        if (input) input.focus();
        return;
      }
      let finished = await readSse(r, onEvent).catch(() => false);
      // A dropped connection loses nothing: re-attach to the run from the last event seen.
      for (let i = 0; !finished && runId && i < 5; i++) {
        const again = await api(`/api/deployments/${enc(runId)}/events`, { headers: lastId ? { 'Last-Event-ID': lastId } : {} });
        if (!again.ok) break;
        finished = await readSse(again, onEvent).catch(() => false);
      }
      if (!finished) {
        setProgress(last ? last.progress : 0, 'error', 'Connection lost');
        $('e-form').textContent = 'The connection to the server was lost before the deploy finished; see the table for its state.';
        return;
      }
      $('run').dataset.outcome = last.stage;
      showResult(last);
    } catch (e) {
      $('e-form').textContent = 'The deploy could not be sent: ' + e.message;
    } finally {
      btn.disabled = false;
      btn.textContent = 'Deploy';
      refresh();
    }
  }

  async function loadPlugins() {
    const sel = $('f-plugin');
    try {
      const r = await api('/api/plugins');
      if (!r.ok) throw new Error((await errorOf(r)).detail);
      const list = await r.json();
      sel.replaceChildren(...list.map((p) => el('option', { value: p.name }, p.display_name ? `${p.display_name} (${p.name})` : p.name)));
      const def = list.find((p) => p.name === 'docker-registry');
      if (def) sel.value = def.name;
    } catch (e) {
      sel.replaceChildren(el('option', { value: 'docker-registry' }, 'docker-registry'));
      $('e-plugin').textContent = 'Could not list the plugins: ' + e.message;
    }
  }

  function init() {
    $('deploy-form').addEventListener('submit', deploy);
    for (const f of FIELDS) {
      const input = $('f-' + f);
      input?.addEventListener('input', () => {
        input.removeAttribute('aria-invalid');
        $('e-' + f).textContent = '';
      });
    }
    $('refresh').addEventListener('click', refresh);
    $('show-all').addEventListener('change', refresh);
    $('detail-close').addEventListener('click', closeDetail);
    $('logs-reload').addEventListener('click', loadLogs);
    $('logs-follow').addEventListener('change', loadLogs);
    $('logs-service').addEventListener('change', loadLogs);
    $('logs-tail').addEventListener('change', loadLogs);
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && !$('detail').hidden && !document.querySelector('dialog[open]')) closeDetail();
    });
    health();
    loadPlugins().then(refresh);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
