// Sightline's pages: theme switch, time picker, uPlot charts from `data-chart` (with deploy
// markers, and exemplars that open their trace when clicked), the selected
// span after htmx swaps, Ctrl+Enter in the SQL editor, and the logs page's live tail.
(function () {
  'use strict';

  var PALETTE = ['#3b82f6', '#10b981', '#f59e0b', '#8b5cf6', '#ec4899', '#14b8a6', '#f97316', '#6366f1'];
  var TAIL_MAX_ROWS = 1000;

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  // ---- theme -------------------------------------------------------------------------------
  function setTheme(theme) {
    document.documentElement.dataset.theme = theme;
    try { localStorage.setItem('sightline-theme', theme); } catch (e) { /* private mode */ }
    drawAll(document);
  }

  // ---- numbers -----------------------------------------------------------------------------
  function fmt(unit, v) {
    if (v == null || isNaN(v)) return '—';
    var a = Math.abs(v);
    if (a === 0) return '0';
    if (unit === 'ms') {
      if (a >= 1000) return (v / 1000).toFixed(a >= 10000 ? 0 : 1) + ' s';
      if (a >= 10) return v.toFixed(0) + ' ms';
      return v.toFixed(a >= 1 ? 1 : 2) + ' ms';
    }
    var s;
    if (a >= 1e9) s = (v / 1e9).toFixed(1) + 'G';
    else if (a >= 1e6) s = (v / 1e6).toFixed(1) + 'M';
    else if (a >= 1e4) s = (v / 1e3).toFixed(0) + 'k';
    else if (a >= 100) s = v.toFixed(0);
    else if (a >= 1) s = v.toFixed(1);
    else if (a === 0) s = '0';
    else s = v.toPrecision(2);
    if (unit === '/s') return s + '/s';
    // UCUM annotations such as {thread} name what is counted; the axis shows plain numbers.
    if (/^\{.*\}$/.test(unit)) return s;
    if (unit === 'By') return s + 'B';
    if (unit === '1' || unit === '') return s;
    return s + ' ' + unit;
  }

  // ---- charts ------------------------------------------------------------------------------
  var charts = new Map();
  // Deploys, drawn as markers on every time chart (those inside an element with data-service
  // show that service's only). Fetched once per page from the API.
  var deploys = [];

  function loadDeploys() {
    if (!document.querySelector('[data-chart]') || typeof fetch === 'undefined') return;
    fetch('/api/v1/deploys', { credentials: 'same-origin' })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (answer) {
        if (!answer || !answer.deploys || !answer.deploys.length) return;
        deploys = answer.deploys.map(function (d) {
          return { t: Date.parse(d.time) / 1000, service: d.service, label: d.service + ' ' + d.version };
        });
        drawAll(document);
      })
      .catch(function () { /* markers are a help, not a need */ });
  }

  function markerHook(el, spark) {
    var scope = el.closest('[data-service]');
    var service = scope ? scope.dataset.service : null;
    return function (u) {
      var marks = deploys.filter(function (d) { return !service || d.service === service; });
      if (!marks.length) return;
      var ctx = u.ctx, top = u.bbox.top, height = u.bbox.height;
      ctx.save();
      ctx.strokeStyle = cssVar('--warn') || '#d97706';
      ctx.fillStyle = ctx.strokeStyle;
      ctx.lineWidth = 1;
      ctx.setLineDash([4, 3]);
      ctx.font = '11px sans-serif';
      // The last point starts the bucket still filling: a deploy within it is drawn at the edge.
      var xs = u.data[0], step = xs.length > 1 ? xs[1] - xs[0] : 0;
      var within = function (m) { return m.t >= u.scales.x.min && m.t <= u.scales.x.max + step; };
      marks.forEach(function (m) {
        if (!within(m)) return;
        var x = Math.round(u.valToPos(Math.min(m.t, u.scales.x.max), 'x', true)) + 0.5;
        ctx.beginPath();
        ctx.moveTo(x, top);
        ctx.lineTo(x, top + height);
        ctx.stroke();
        if (!spark) ctx.fillText(m.label, x + 3, top + 11);
      });
      ctx.restore();
      el.dataset.markers = String(marks.filter(within).length);
    };
  }

  // Exemplars: points at their time and value that open their trace. Their pixel positions are
  // kept on the chart element (for the click, and data-exemplars says how many are drawn).
  function exemplarHook(el, spec) {
    var points = spec.exemplars || [];
    return function (u) {
      var drawn = [];
      if (!points.length || spec.spark) { el._exemplars = drawn; return; }
      var ctx = u.ctx, dpr = uPlot.pxRatio || 1;
      ctx.save();
      ctx.fillStyle = cssVar('--text') || '#111827';
      ctx.strokeStyle = cssVar('--bg') || '#ffffff';
      ctx.lineWidth = 1;
      var xs = u.data[0], step = xs.length > 1 ? xs[1] - xs[0] : 0;
      points.forEach(function (p) {
        if (p.t < u.scales.x.min || p.t > u.scales.x.max + step) return;
        if (p.y < u.scales.y.min || p.y > u.scales.y.max) return;
        var x = u.valToPos(Math.min(p.t, u.scales.x.max), 'x', true);
        var y = u.valToPos(p.y, 'y', true);
        var r = 4 * dpr;
        ctx.beginPath();
        ctx.moveTo(x, y - r); ctx.lineTo(x + r, y); ctx.lineTo(x, y + r); ctx.lineTo(x - r, y);
        ctx.closePath();
        ctx.fill();
        ctx.stroke();
        drawn.push({ x: x / dpr, y: y / dpr, trace_id: p.trace_id });
      });
      ctx.restore();
      el._exemplars = drawn;
      el.dataset.exemplars = String(drawn.length);
      if (drawn.length) {
        // Where the first one is, relative to the chart element (browser tests click there).
        var over = u.over.getBoundingClientRect(), box = el.getBoundingClientRect();
        el.dataset.exemplarX = String(Math.round(drawn[0].x - u.bbox.left / dpr + over.left - box.left));
        el.dataset.exemplarY = String(Math.round(drawn[0].y - u.bbox.top / dpr + over.top - box.top));
      }
    };
  }

  // The exemplar within a few pixels of a click on a chart, if any.
  function exemplarAt(el, event) {
    var u = charts.get(el);
    if (!u || !el._exemplars || !el._exemplars.length) return null;
    var over = u.over.getBoundingClientRect();
    var dpr = uPlot.pxRatio || 1;
    var best = null, bestD = 64;
    el._exemplars.forEach(function (p) {
      var px = p.x - u.bbox.left / dpr + over.left, py = p.y - u.bbox.top / dpr + over.top;
      var d = (px - event.clientX) * (px - event.clientX) + (py - event.clientY) * (py - event.clientY);
      if (d <= bestD) { best = p; bestD = d; }
    });
    return best;
  }

  function isolated(values) {
    for (var i = 0; i < values.length; i++) {
      if (values[i] != null && (i === 0 || values[i - 1] == null) &&
          (i === values.length - 1 || values[i + 1] == null)) return true;
    }
    return false;
  }

  function draw(el) {
    if (typeof uPlot === 'undefined') return;
    var spec;
    try { spec = JSON.parse(el.dataset.chart); } catch (e) { return; }
    var old = charts.get(el);
    if (old) { old.destroy(); }
    el.textContent = '';
    var width = Math.max(el.clientWidth, 120);
    var axis = { stroke: cssVar('--muted'), grid: { stroke: cssVar('--grid'), width: 1 }, ticks: { show: false } };
    var opts = {
      width: width,
      height: spec.spark ? 34 : 170,
      legend: { show: !spec.spark, live: true },
      cursor: spec.spark ? { show: false } : { drag: { x: false, y: false } },
      padding: spec.spark ? [2, 0, 2, 0] : null,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), 'Etc/UTC'); },
      // From zero (or below it, for values that go negative, such as an overspent budget).
      scales: { x: { time: true }, y: { range: function (u, min, max) {
        var low = min < 0 ? min * 1.1 : 0;
        return [low, max > 0 ? max * 1.1 : (low < 0 ? 0 : 1)];
      } } },
      axes: spec.spark ? [{ show: false }, { show: false }] : [
        axis,
        Object.assign({}, axis, { size: 64, values: function (u, vals) { return vals.map(function (v) { return fmt(spec.unit, v); }); } })
      ],
      series: [{}].concat(spec.series.map(function (s, i) {
        var color = s.color || PALETTE[i % PALETTE.length];
        return {
          label: s.label,
          stroke: color,
          width: spec.spark ? 1.25 : 1.75,
          fill: spec.spark && i === 0 ? color + '22' : undefined,
          // A value with no neighbour draws no line: show it as a point.
          points: { show: isolated(s.values), size: 5 },
          value: function (u, v) { return fmt(spec.unit, v); }
        };
      }))
    };
    opts.hooks = { draw: [markerHook(el, spec.spark), exemplarHook(el, spec)] };
    var data = [spec.x].concat(spec.series.map(function (s) { return s.values; }));
    charts.set(el, new uPlot(opts, data, el));
  }

  function drawAll(root) {
    root.querySelectorAll('[data-chart]').forEach(draw);
  }

  var resizeTimer = null;
  window.addEventListener('resize', function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      charts.forEach(function (chart, el) {
        if (!document.body.contains(el)) { chart.destroy(); charts.delete(el); return; }
        chart.setSize({ width: Math.max(el.clientWidth, 120), height: chart.height });
      });
    }, 150);
  });

  // ---- trace page: the selected span follows the side panel -------------------------------------
  function markSelectedSpan() {
    var panel = document.getElementById('span-panel');
    if (!panel) return;
    var id = panel.dataset.spanId;
    document.querySelectorAll('.span-row').forEach(function (row) {
      row.classList.toggle('selected', row.dataset.spanId === id);
    });
  }

  // ---- logs page: live tail ------------------------------------------------------------------
  var tail = null;

  function startTail(button) {
    var tbody = document.querySelector('#log-lines tbody');
    var status = document.getElementById('tail-status');
    var pending = [];
    var frame = 0;
    var received = 0;
    var source = new EventSource(button.dataset.stream);
    tail = { source: source, button: button };
    button.textContent = 'Stop live tail';
    button.setAttribute('aria-pressed', 'true');
    status.textContent = 'Connecting…';

    function flush() {
      frame = 0;
      if (!pending.length) return;
      // Each chunk is newest first; later chunks are newer, so they go on top.
      tbody.insertAdjacentHTML('afterbegin', pending.reverse().join(''));
      pending = [];
      while (tbody.rows.length > TAIL_MAX_ROWS) tbody.deleteRow(-1);
      var empty = document.querySelector('main p.empty');
      if (empty) empty.remove();
      status.textContent = 'Live: ' + received + ' new line' + (received === 1 ? '' : 's') +
        ' (the newest ' + TAIL_MAX_ROWS + ' are kept on the page).';
    }

    source.addEventListener('ready', function () {
      status.textContent = 'Live: new lines appear at the top.';
    });
    source.addEventListener('lines', function (event) {
      received += (event.data.match(/class="log-line/g) || []).length;
      pending.push(event.data);
      if (!frame) frame = requestAnimationFrame(flush);
    });
    source.onerror = function () {
      if (tail && tail.source === source) status.textContent = 'Connection lost; reconnecting…';
    };
  }

  function stopTail() {
    if (!tail) return;
    tail.source.close();
    tail.button.textContent = 'Live tail';
    tail.button.setAttribute('aria-pressed', 'false');
    var status = document.getElementById('tail-status');
    if (status) status.textContent = 'Live tail stopped.';
    tail = null;
  }

  // ---- wiring --------------------------------------------------------------------------------
  document.addEventListener('click', function (event) {
    if (event.target.closest('#theme-toggle')) {
      setTheme(document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark');
      return;
    }
    var live = event.target.closest('#live-tail');
    if (live) {
      if (tail) stopTail(); else startTail(live);
      return;
    }
    var chart = event.target.closest('[data-chart]');
    if (chart) {
      var exemplar = exemplarAt(chart, event);
      if (exemplar) window.location.href = '/traces/' + exemplar.trace_id;
    }
  });

  document.addEventListener('change', function (event) {
    var select = event.target.closest('#time-picker select[name=range]');
    if (!select) return;
    var custom = select.form.querySelector('.custom');
    if (select.value === 'custom') {
      custom.hidden = false;
      custom.querySelector('input').focus();
    } else {
      select.form.requestSubmit();
    }
  });

  document.addEventListener('keydown', function (event) {
    if (event.target.id === 'sql' && event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      event.target.form.requestSubmit();
      return;
    }
    // "/" jumps to the page's search box, as in most tools.
    if (event.key === '/' && !/^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName)) {
      var box = document.querySelector('#log-filters input[name=q], #sql');
      if (box) { event.preventDefault(); box.focus(); }
    }
  });

  document.addEventListener('DOMContentLoaded', function () {
    drawAll(document);
    markSelectedSpan();
    loadDeploys();
  });
  document.addEventListener('htmx:afterSettle', function (event) {
    drawAll(event.target);
    markSelectedSpan();
  });
})();
