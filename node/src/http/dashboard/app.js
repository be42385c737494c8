// The Salesboy dashboard: reads the admin API with the token the user logs in with, live
// through the server-sent event streams /api/cluster/stream and /api/tenants/{id}/stream.
// Every value from the API reaches the page as text (textContent), never as markup.
'use strict';

const TOKEN_KEY = 'salesboy.token';
const POINTS = 60;
// How long an API request may take before the page reports it unanswered.
const API_TIMEOUT_MS = 20000;
const $ = (id) => document.getElementById(id);

const app = {
  token: null,
  caller: null,
  view: null,
  stream: null,
  tenant: null,
  chat: null,
  rates: [],
  latencies: [],
  split: [],
  // Bumped by every change of view or user: answers to an older generation are dropped.
  gen: 0,
  transcriptSeq: 0,
  // Each node's running totals at each of the last minute's snapshots (nodeTotals).
  totals: [],
};

// ----- API -----

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: 'Bearer ' + app.token };
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  // A request that never answers (a node stuck, a connection lost) becomes an error the
  // page shows, not a view that waits forever.
  init.signal = AbortSignal.timeout(API_TIMEOUT_MS);
  let response;
  let text;
  try {
    response = await fetch('/api' + path, init);
    text = await response.text();
  } catch (error) {
    throw new ApiError(0, error.name === 'TimeoutError'
      ? 'no answer within ' + API_TIMEOUT_MS / 1000 + ' s'
      : 'the node could not be reached');
  }
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (error) {
    // Not the API's JSON (a proxy's error page, say).
    throw new ApiError(response.status, response.status + ' ' + response.statusText);
  }
  if (!response.ok) {
    throw new ApiError(response.status, (data && data.error) || response.statusText);
  }
  return data;
}

// Reads a server-sent event stream with the token (EventSource cannot send headers) and
// calls handlers[eventName](data) for each event; reconnects with backoff until stopped.
function openStream(path, handlers, onState) {
  const controller = new AbortController();
  let delay = 500;
  const run = async () => {
    while (!controller.signal.aborted) {
      try {
        const response = await fetch('/api' + path, {
          headers: { Authorization: 'Bearer ' + app.token, Accept: 'text/event-stream' },
          signal: controller.signal,
        });
        if (response.status === 401) {
          logout('Your token is no longer accepted: log in again.');
          return;
        }
        if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) {
          // Asking again would get the same answer (403, 404…).
          onState('closed (' + response.status + ')');
          return;
        }
        if (!response.ok || !response.body) throw new Error('stream answered ' + response.status);
        onState('live');
        delay = 500;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            dispatch(buffer.slice(0, end), handlers);
            buffer = buffer.slice(end + 2);
          }
        }
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      onState('reconnecting');
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 5000);
    }
  };
  run();
  return { stop: () => controller.abort() };
}

function dispatch(block, handlers) {
  let name = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) name = line.slice(6).trim();
    else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
  }
  if (data.length === 0 || !handlers[name]) return;
  try {
    handlers[name](JSON.parse(data.join('\n')));
  } catch (error) {
    console.warn('unreadable stream event', name, error);
  }
}

// ----- helpers -----

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === 'class') node.className = value;
    else if (key.startsWith('data-')) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function figures(target, pairs) {
  target.replaceChildren(
    ...pairs.map(([label, value, id]) =>
      el('div', id ? { 'data-figure': id } : {}, el('dt', {}, label), el('dd', {}, String(value))),
    ),
  );
}

function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return n.toFixed(i === 0 ? 0 : 1) + ' ' + units[i];
}

function time(ms) {
  return new Date(ms).toLocaleTimeString();
}

function micros(n) {
  return '$' + (n / 1e6).toFixed(4);
}

function showView(name) {
  for (const id of ['login-view', 'cluster-view', 'tenants-view', 'tenant-view']) {
    $(id).hidden = id !== name + '-view';
  }
  for (const button of document.querySelectorAll('#nav [data-view]')) {
    if (button.dataset.view === name || (name === 'tenant' && button.dataset.view === 'tenants')) {
      button.setAttribute('aria-current', 'page');
    } else {
      button.removeAttribute('aria-current');
    }
  }
  app.view = name;
}

function stopStream() {
  if (app.stream) app.stream.stop();
  app.stream = null;
}

// ----- login -----

async function login(token) {
  app.token = token;
  try {
    app.caller = await api('GET', '/me');
  } catch (error) {
    app.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $('login-error').textContent = error.status === 401
      ? 'That token is not accepted.'
      : 'Could not log in: ' + error.message;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $('login-error').textContent = '';
  $('token').value = '';
  $('nav').hidden = false;
  if (app.caller.role === 'operator') {
    $('whoami').textContent = 'Operator';
    $('nav-cluster').hidden = false;
    $('nav-tenants').hidden = false;
    openCluster();
  } else {
    $('whoami').textContent = 'Tenant ' + app.caller.tenant;
    $('nav-cluster').hidden = true;
    $('nav-tenants').hidden = true;
    openTenant(app.caller.tenant);
  }
}

// Forgets everything the last user was shown.
function clearViews() {
  app.gen += 1;
  $('live-state').textContent = 'connecting';
  $('node-figures-title').textContent = 'This node';
  for (const id of ['chart-rate', 'chart-latency']) $(id).setAttribute('aria-label', 'no data yet');
  app.spendCap = null;
  app.clusterAt = 0;
  app.clusterLoading = false;
  for (const id of ['figures', 'node-figures', 'timeline', 'tenant-list', 'tenant-placement', 'tenant-usage', 'tenant-moves',
    'conversations', 'transcript', 'chart-rate', 'chart-latency', 'tenant-providers']) {
    $(id).replaceChildren();
  }
  $('nodes').tBodies[0].replaceChildren();
  for (const id of ['tenant-title', 'chat-title', 'chat-state', 'reply-status', 'tenant-why']) $(id).textContent = '';
  $('why-candidates').tBodies[0].replaceChildren();
  $('reply-text').value = '';
  $('chat').hidden = true;
  app.rates = [];
  app.latencies = [];
  app.split = [];
  app.totals = [];
  app.tenant = null;
  app.chat = null;
  app.cluster = null;
}

function logout(message) {
  stopStream();
  clearViews();
  app.token = null;
  app.caller = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $('nav').hidden = true;
  $('whoami').textContent = '';
  $('login-error').textContent = message || '';
  showView('login');
  $('token').focus();
}

// ----- cluster -----

function openCluster() {
  stopStream();
  app.gen += 1;
  showView('cluster');
  $('live-state').textContent = 'connecting';
  app.stream = openStream('/cluster/stream', {
    snapshot: renderClusterSnapshot,
    timeline: addTimeline,
  }, (state) => { $('live-state').textContent = state; });
}

function nodeState(node, answering) {
  if (answering && answering.node_id === node.node_id && answering.status === 'fenced') return 'fenced';
  if (!node.alive) return 'dead';
  if (!node.compatible) return 'incompatible';
  if (node.draining) return 'draining';
  return 'alive';
}

function renderClusterSnapshot(snapshot) {
  const { cluster, node, pulse } = snapshot;
  const alive = cluster.nodes.filter((n) => n.alive).length;
  const rss = cluster.nodes.filter((n) => n.alive).reduce((sum, n) => sum + n.rss_bytes, 0);
  const conversations = cluster.nodes.filter((n) => n.alive).reduce((sum, n) => sum + n.conversations, 0);
  app.rates.push([pulse.received, pulse.replies]);
  app.latencies.push(pulse.reply_p50_ms);
  app.totals.push(nodeTotals(cluster));
  if (app.totals.length > POINTS) app.totals.shift();
  app.split.push(replySplit(cluster));
  for (const series of [app.rates, app.latencies, app.split]) {
    if (series.length > POINTS) series.shift();
  }
  // The last minute's last replies.
  const split = app.split.filter((v) => v !== null).slice(-1)[0];
  const lastLatency = app.latencies.filter((v) => v !== null).slice(-1)[0];
  figures($('figures'), [
    ['Nodes alive', alive + ' / ' + cluster.nodes.length, 'nodes'],
    ['Tenants placed', cluster.tenants, 'tenants'],
    ['Conversations', conversations, 'conversations'],
    ['Memory (live nodes)', bytes(rss), 'memory'],
    ['Messages / s', pulse.received, 'received'],
    ['Replies / s', pulse.replies, 'replies'],
    ['Reply latency (median)', lastLatency === undefined ? '–' : lastLatency + ' ms', 'latency'],
    ['Gateway / LLM time (mean)', split ? split[0].toFixed(0) + ' / ' + split[1].toFixed(0) + ' ms' : '–', 'split'],
    ['Leader', cluster.leader || '–', 'leader'],
  ]);
  const f = snapshot.figures;
  const percent = (v) => (v === null || v === undefined ? '–' : v.toFixed(1) + ' %');
  const errors = f.error_percent;
  $('node-figures-title').textContent = 'This node (' + node.node_id + ')';
  figures($('node-figures'), [
    ['CPU', percent(f.cpu_percent), 'cpu'],
    ['Memory', bytes(f.rss_bytes) + (f.memory_limit_bytes ? ' of ' + bytes(f.memory_limit_bytes) : ''), 'ram'],
    ['Sessions', f.sessions, 'sessions'],
    ['Database', node.database === 'ok' ? bytes(f.database_size_bytes) : node.database, 'database'],
    ['Knowledge passages', f.knowledge_passages === null ? '–' : f.knowledge_passages, 'knowledge'],
    ['Errors: webhooks / sends / LLM', [errors.webhooks, errors.sends, errors.llm_calls].map(percent).join(' / '), 'errors'],
    ['Alerts raised', node.alerts.map((a) => a.alert).join(', ') || 'none', 'alerts'],
  ]);
  const failedShare = callErrors(cluster);
  const rows = cluster.nodes.map((n) => {
    const state = nodeState(n, node);
    const drain = el('button', {
      type: 'button', class: 'drain danger', textContent: 'Drain',
      disabled: state !== 'alive', 'data-node': n.node_id,
    });
    drain.setAttribute('aria-label', 'Drain ' + n.node_id);
    drain.addEventListener('click', () => drainNode(n.node_id));
    return el('tr', { 'data-node': n.node_id },
      el('th', { scope: 'row' }, n.node_id),
      el('td', { class: 'state state-' + state }, state),
      el('td', {}, n.placed + ' / ' + n.tenants + ' / ' + n.max_tenants),
      el('td', {}, String(n.conversations)),
      el('td', {}, n.node_id === node.node_id && snapshot.figures.cpu_percent !== null
        ? snapshot.figures.cpu_percent.toFixed(0) + ' %'
        : (n.alive ? n.cpu_percent.toFixed(0) + ' %' : '–')),
      el('td', {}, bytes(n.rss_bytes)),
      el('td', { class: 'errors' }, failedShare[n.node_id] === undefined ? '–' : failedShare[n.node_id].toFixed(1) + ' %'),
      el('td', {}, n.version + ' (protocol ' + n.protocol + ')'),
      el('td', {}, drain));
  });
  // Keep the focused drain button focused across refreshes.
  const focused = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.node : null;
  $('nodes').tBodies[0].replaceChildren(...rows);
  if (focused) {
    const again = document.querySelector('#nodes button[data-node="' + CSS.escape(focused) + '"]');
    if (again) again.focus();
  }
  chart($('chart-rate'), [
    ['received', app.rates.map((r) => r[0])],
    ['replies', app.rates.map((r) => r[1])],
  ], 'messages per second, last value ' + pulse.received + ' received, ' + pulse.replies + ' replies');
  chart($('chart-latency'), [
    ['latency', app.latencies.map((v) => (v === null ? 0 : v))],
    ['gateway', app.split.map((v) => (v ? v[0] : 0))],
    ['llm', app.split.map((v) => (v ? v[1] : 0))],
  ], 'median reply latency, last value ' + (lastLatency === undefined ? 'none' : lastLatency + ' ms') +
    (split ? '; mean gateway time ' + split[0].toFixed(0) + ' ms, LLM time ' + split[1].toFixed(0) + ' ms' : ''));
}

// The running totals each node's heartbeat carries, by node:
// [calls ok, calls failed, replies sent, reply gateway ms, reply LLM ms].
function nodeTotals(cluster) {
  const totals = {};
  for (const n of cluster.nodes) {
    const c = n.calls;
    totals[n.node_id] = [
      c.webhooks_ok + c.sends_ok + c.llm_ok,
      c.webhooks_failed + c.sends_failed + c.llm_failed,
      n.replies_sent, n.reply_gateway_ms, n.reply_llm_ms,
    ];
  }
  return totals;
}

// Each live node's growth of its totals from `before` to the newest snapshot; a node seen
// for the first time, or restarted (its totals went back), is left out.
function growth(cluster, before) {
  const now = app.totals[app.totals.length - 1];
  const grown = {};
  for (const n of cluster.nodes) {
    const from = before && before[n.node_id];
    const to = now[n.node_id];
    if (!n.alive || !from || to.some((v, i) => v < from[i])) continue;
    grown[n.node_id] = to.map((v, i) => v - from[i]);
  }
  return grown;
}

// Each live node's failed calls (webhooks, sends, LLM) in percent of its calls over the last
// minute; nodes without calls are left out.
function callErrors(cluster) {
  const errors = {};
  for (const [node, [ok, failed]] of Object.entries(growth(cluster, app.totals[0]))) {
    if (ok + failed > 0) errors[node] = (failed / (ok + failed)) * 100;
  }
  return errors;
}

// The mean gateway and LLM time of the replies sent since the last snapshot, over every
// live node; null without replies.
function replySplit(cluster) {
  let sent = 0;
  let gateway = 0;
  let llm = 0;
  for (const [, , replies, gatewayMs, llmMs] of Object.values(growth(cluster, app.totals[app.totals.length - 2]))) {
    sent += replies;
    gateway += gatewayMs;
    llm += llmMs;
  }
  return sent > 0 ? [gateway / sent, llm / sent] : null;
}

function chart(svg, series, label) {
  const ns = 'http://www.w3.org/2000/svg';
  const max = Math.max(1, ...series.flatMap(([, values]) => values));
  const lines = series.map(([name, values]) => {
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('class', name);
    const step = 300 / (POINTS - 1);
    const offset = POINTS - values.length;
    line.setAttribute('points', values
      .map((v, i) => ((offset + i) * step).toFixed(1) + ',' + (78 - (v / max) * 74).toFixed(1))
      .join(' '));
    return line;
  });
  svg.replaceChildren(...lines);
  svg.setAttribute('aria-label', label + ' (scale up to ' + max + ')');
}

function describe(event) {
  const d = event.detail || {};
  switch (event.kind) {
    case 'node_joined': return 'node ' + (d.node || '?') + ' joined';
    case 'node_left': return 'node ' + (d.node || '?') + ' left';
    case 'tenant_migrated': return (d.failover ? 'failover: tenant ' : 'tenant ') + event.tenant + ' moved ' + (d.from || '?') + ' → ' + (d.to || '?');
    case 'alert_raised': return 'alert ' + (d.alert || '') + (event.tenant ? ' for ' + event.tenant : '');
    case 'alert_cleared': return 'alert cleared: ' + (d.alert || '') + (event.tenant ? ' for ' + event.tenant : '');
    case 'session_status': return 'session of ' + event.tenant + ': ' + (d.status || '?');
    case 'message_rejected': return 'a delivery item for ' + event.tenant + ' was rejected';
    default: return event.kind;
  }
}

function addTimeline(event, text) {
  const item = el('li', { class: 'event-' + event.kind, 'data-kind': event.kind },
    el('time', { dateTime: new Date(event.at_ms).toISOString() }, time(event.at_ms)),
    text || describe(event));
  const list = $('timeline');
  list.prepend(item);
  while (list.children.length > 200) list.lastElementChild.remove();
}

async function drainNode(node) {
  if (!window.confirm('Drain ' + node + '? It moves its tenants to the other nodes, then exits.')) return;
  try {
    await api('POST', '/cluster/nodes/' + encodeURIComponent(node) + '/drain');
    addTimeline({ kind: 'drain_requested', at_ms: Date.now() }, 'drain of ' + node + ' requested');
  } catch (error) {
    window.alert('Drain of ' + node + ' refused: ' + error.message);
  }
}

// ----- tenants -----

async function openTenants() {
  stopStream();
  const gen = ++app.gen;
  showView('tenants');
  const list = $('tenant-list');
  list.replaceChildren(el('li', { class: 'muted' }, 'Loading…'));
  try {
    const tenants = await api('GET', '/tenants');
    if (gen !== app.gen) return;
    list.replaceChildren(...tenants.map((t) => {
      const button = el('button', { type: 'button', 'data-tenant': t.id },
        t.name ? t.name + ' (' + t.id + ')' : t.id);
      button.addEventListener('click', () => openTenant(t.id));
      return el('li', {}, button);
    }));
    if (tenants.length === 0) list.replaceChildren(el('li', { class: 'muted' }, 'No tenants yet.'));
  } catch (error) {
    list.replaceChildren(el('li', { class: 'error' }, 'Could not list tenants: ' + error.message));
  }
}

async function openTenant(id) {
  stopStream();
  const gen = ++app.gen;
  app.tenant = id;
  app.chat = null;
  showView('tenant');
  $('chat').hidden = true;
  // Nothing of the tenant shown before stays: its chats are read again.
  $('conversations').replaceChildren(el('li', { class: 'muted' }, 'Loading…'));
  $('transcript').replaceChildren();
  $('tenant-title').textContent = 'Tenant ' + id;
  const path = '/tenants/' + encodeURIComponent(id);
  try {
    const tenant = await api('GET', path);
    if (gen !== app.gen) return;
    $('tenant-title').textContent = (tenant.name || tenant.id) + ' (' + tenant.id + ')';
    app.spendCap = tenant.llm_monthly_spend_cap_micros;
  } catch (error) {
    if (gen === app.gen) $('tenant-title').textContent = 'Tenant ' + id + ': ' + error.message;
    return;
  }
  app.cluster = null;
  app.clusterAt = 0;
  $('moves').hidden = app.caller.role !== 'operator';
  loadUsage(path, gen);
  loadConversations(path, gen);
  app.stream = openStream(path + '/stream', {
    snapshot: renderTenantSnapshot,
    event: onTenantEvent,
  }, () => {});
}

function renderTenantSnapshot(snapshot) {
  const s = snapshot.session;
  const session = s.session || {};
  figures($('tenant-placement'), [
    ['State', s.state, 'state'],
    ['Node', s.node || '–', 'node'],
    ['Epoch', s.epoch === null || s.epoch === undefined ? '–' : s.epoch, 'epoch'],
    ['Moving to', s.moving_to || '–', 'moving'],
    ['Session', session.state || session.status || (s.session ? 'up' : 'not hosted here'), 'session'],
    ['Messages / s', snapshot.pulse.received, 'received'],
    ['Replies / s', snapshot.pulse.replies, 'replies'],
  ]);
  renderWhy(snapshot.placement);
  renderProviders(snapshot.providers, s.node);
  renderMoves(s.node);
  // The operator's view of the cluster's load, for the moves, at most 5 s old.
  if (app.caller && app.caller.role === 'operator' && !app.clusterLoading &&
      (!app.clusterAt || Date.now() - app.clusterAt > 5000)) {
    app.clusterLoading = true;
    const gen = app.gen;
    api('GET', '/cluster')
      .then((cluster) => {
        if (gen !== app.gen) return;
        app.cluster = cluster;
        app.clusterAt = Date.now();
      })
      .catch(() => {})
      .finally(() => { app.clusterLoading = false; });
  }
}

// The tenant's LLM providers: circuit and per-minute budgets used.
function renderProviders(providers, node) {
  const list = $('tenant-providers');
  if (providers === null || providers === undefined) {
    list.replaceChildren(el('li', { class: 'muted' }, node
      ? 'Shown by the node that runs it (' + node + ').'
      : 'Not running: shown once it runs.'));
    return;
  }
  if (providers.length === 0) {
    list.replaceChildren(el('li', { class: 'muted' }, 'No provider: it answers from its knowledge alone.'));
    return;
  }
  const limit = (used, max) => used + ' of ' + (max === null || max === undefined ? 'unlimited' : max);
  list.replaceChildren(...providers.map((p) => el('li', { 'data-provider': p.name },
    p.name + ' (' + p.model + '): ' + (p.open ? 'resting' : 'ready') +
    (p.consecutive_failures > 0 ? ', ' + p.consecutive_failures + ' failures in a row' : '') +
    '; requests ' + limit(p.requests_this_minute, p.requests_per_minute) +
    ', tokens ' + limit(p.tokens_this_minute, p.tokens_per_minute))));
}

const REASONS = {
  activation: 'it was active nowhere when a message came for it',
  failover: 'its node died',
  drain: 'its node drained',
  rebalance: 'the leader evened out the spread',
};

// Why the tenant is where it is: the last placement decision and the load it saw.
function renderWhy(placement) {
  const table = $('why-candidates');
  if (!placement) {
    $('tenant-why').textContent = 'No placement decision recorded (a node alone, or placed before this was recorded).';
    table.hidden = true;
    return;
  }
  $('tenant-why').textContent = 'Placed on ' + placement.node + ' by ' + placement.decided_by + ' at ' +
    new Date(placement.decided_ms).toLocaleString() + ' because ' + (REASONS[placement.reason] || placement.reason) +
    (placement.from ? ' (it left ' + placement.from + ')' : '') +
    (placement.epoch !== null && placement.epoch !== undefined ? ', epoch ' + placement.epoch : '') +
    '. The node with the most headroom that takes tenants is chosen' +
    (placement.candidates.length > 0 ? '; the live nodes then:' : '.');
  table.tBodies[0].replaceChildren(...placement.candidates.map((c) => {
    const headroom = c.max_tenants > 0 ? ((1 - c.tenants / c.max_tenants) * 100).toFixed(2) + ' %' : '–';
    const notes = [];
    if (c.node === placement.node) notes.push('chosen');
    if (c.node === placement.from) notes.push('left');
    if (c.draining) notes.push('draining');
    return el('tr', { 'data-node': c.node, class: c.node === placement.node ? 'chosen' : '' },
      el('th', { scope: 'row' }, c.node),
      el('td', {}, c.tenants + ' / ' + c.max_tenants),
      el('td', {}, headroom),
      el('td', {}, bytes(c.rss_bytes)),
      el('td', {}, notes.join(', ')));
  }));
  table.hidden = placement.candidates.length === 0;
}

// What moving the tenant from its node to each other node that takes tenants would change,
// from the cluster's load (read every 5 s while the view is open).
function renderMoves(from) {
  const list = $('tenant-moves');
  if (!app.cluster || !from) {
    list.replaceChildren(el('li', { class: 'muted' }, from ? 'Reading the cluster…' : 'Not placed: it is placed when a message comes.'));
    return;
  }
  const nodes = app.cluster.nodes;
  const source = nodes.find((n) => n.node_id === from);
  const targets = nodes.filter((n) => n.node_id !== from && n.alive && n.compatible && !n.draining);
  if (targets.length === 0) {
    list.replaceChildren(el('li', { class: 'muted' }, 'No other node takes tenants now.'));
    return;
  }
  const room = (n, placed) => (n.max_tenants > 0 ? ((1 - placed / n.max_tenants) * 100).toFixed(1) + ' % free' : '–');
  list.replaceChildren(...targets.map((t) => el('li', { 'data-node': t.node_id },
    'to ' + t.node_id + ': ' + t.node_id + ' ' + t.placed + ' → ' + (t.placed + 1) + ' tenants (' + room(t, t.placed + 1) + ')' +
    (source ? '; ' + from + ' ' + source.placed + ' → ' + Math.max(0, source.placed - 1) + ' (' + room(source, Math.max(0, source.placed - 1)) + ')' : ''))));
}

async function loadUsage(path, gen) {
  try {
    const usage = await api('GET', path + '/usage');
    if (gen !== app.gen) return;
    const cap = app.spendCap;
    figures($('tenant-usage'), [
      ['Month', usage.month, 'month'],
      ['LLM requests', usage.llm_requests, 'llm-requests'],
      ['LLM tokens', usage.tokens.prompt + usage.tokens.completion, 'llm-tokens'],
      ['LLM cost', micros(usage.llm_cost_micros), 'llm-cost'],
      ['LLM budget left', cap === null || cap === undefined ? 'node default' : micros(Math.max(0, cap - usage.llm_cost_micros)) + ' of ' + micros(cap), 'llm-budget'],
      ['Messages in', usage.messages.in, 'messages-in'],
      ['Messages out', usage.messages.out, 'messages-out'],
    ]);
  } catch (error) {
    if (gen === app.gen) figures($('tenant-usage'), [['Usage', 'unavailable: ' + error.message]]);
  }
}

async function loadConversations(path, gen) {
  const list = $('conversations');
  try {
    const conversations = await api('GET', path + '/conversations?limit=100');
    if (gen !== app.gen) return;
    list.replaceChildren(...conversations.map((c) => {
      const paused = c.bot_paused_until_ms !== null && c.bot_paused_until_ms !== undefined;
      const button = el('button', { type: 'button', 'data-chat': c.chat },
        c.chat + (paused ? ' (bot paused)' : ''));
      button.addEventListener('click', () => openChat(c.chat));
      return el('li', {}, button);
    }));
    if (conversations.length === 0) list.replaceChildren(el('li', { class: 'muted' }, 'No conversations yet.'));
  } catch (error) {
    if (gen === app.gen) list.replaceChildren(el('li', { class: 'error' }, 'Could not list conversations: ' + error.message));
  }
}

function chatPath(chat) {
  return '/tenants/' + encodeURIComponent(app.tenant) + '/conversations/' + encodeURIComponent(chat);
}

async function openChat(chat) {
  app.chat = chat;
  $('chat').hidden = false;
  $('chat-title').textContent = 'Chat with ' + chat;
  $('reply-status').textContent = '';
  await loadTranscript();
}

async function loadTranscript() {
  const chat = app.chat;
  if (!chat) return;
  const gen = app.gen;
  // Only the newest answer is shown: an older one may arrive after it.
  const seq = ++app.transcriptSeq;
  try {
    const page = await api('GET', chatPath(chat) + '/messages?limit=100');
    if (chat !== app.chat || gen !== app.gen || seq !== app.transcriptSeq) return;
    renderPause(page.bot_paused_until_ms);
    const messages = page.messages.slice().sort((a, b) => a.id - b.id);
    $('transcript').replaceChildren(...messages.map((m) => {
      const who = m.direction === 'inbound' ? 'customer' : (m.origin || 'outbound');
      return el('li', { class: m.direction, 'data-id': String(m.id), 'data-origin': who },
        el('span', { class: 'who' }, who + ' · ' + time(m.created_ms) + (m.status ? ' · ' + m.status : '')),
        m.body === null || m.body === undefined ? '[' + m.kind + ']' : m.body);
    }));
    const list = $('transcript');
    list.scrollTop = list.scrollHeight;
  } catch (error) {
    if (chat !== app.chat || gen !== app.gen || seq !== app.transcriptSeq) return;
    $('transcript').replaceChildren(el('li', { class: 'error' }, 'Could not read the chat: ' + error.message));
  }
}

function renderPause(until) {
  const paused = until !== null && until !== undefined;
  $('chat-state').textContent = paused
    ? 'Bot paused' + (until >= 253402300799000 ? '' : ' until ' + new Date(until).toLocaleString())
    : 'Bot active';
  $('chat-state').dataset.paused = String(paused);
  $('pause').disabled = paused;
  $('resume').disabled = !paused;
}

async function setPaused(pause) {
  try {
    const state = await api('POST', chatPath(app.chat) + (pause ? '/pause' : '/resume'));
    renderPause(state.bot_paused_until_ms);
    loadConversations('/tenants/' + encodeURIComponent(app.tenant), app.gen);
  } catch (error) {
    $('chat-state').textContent = 'Could not ' + (pause ? 'pause' : 'resume') + ': ' + error.message;
  }
}

async function sendReply(event) {
  event.preventDefault();
  const text = $('reply-text').value.trim();
  if (!text) return;
  $('reply-send').disabled = true;
  $('reply-status').textContent = 'Sending…';
  try {
    await api('POST', chatPath(app.chat) + '/send', { text });
    $('reply-text').value = '';
    $('reply-status').textContent = 'Sent.';
    await loadTranscript();
  } catch (error) {
    $('reply-status').textContent = 'Not sent: ' + error.message;
  } finally {
    $('reply-send').disabled = false;
  }
}

function onTenantEvent(event) {
  if (['message_received', 'reply_sent', 'owner_message_sent', 'status_changed', 'bot_paused', 'bot_resumed'].includes(event.kind)) {
    if (app.chat && event.chat === app.chat) loadTranscript();
    if (event.kind === 'message_received' && !document.querySelector('#conversations [data-chat="' + CSS.escape(event.chat || '') + '"]')) {
      loadConversations('/tenants/' + encodeURIComponent(app.tenant), app.gen);
    }
  }
}

// ----- wiring -----

document.addEventListener('DOMContentLoaded', () => {
  $('login').addEventListener('submit', (event) => {
    event.preventDefault();
    login($('token').value.trim());
  });
  $('logout').addEventListener('click', () => logout());
  $('nav-cluster').addEventListener('click', openCluster);
  $('nav-tenants').addEventListener('click', openTenants);
  $('pause').addEventListener('click', () => setPaused(true));
  $('resume').addEventListener('click', () => setPaused(false));
  $('reply-form').addEventListener('submit', sendReply);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) login(saved);
  else showView('login');
});
