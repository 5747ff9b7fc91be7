// The report's interactivity: gallery sorting and filtering, and the unit and concept pages, drawn from the
// JSON in #report-data. A strip is the unit's plain top images (taken from its gallery card) under the
// overlay that highlights its region at one threshold (data.overlays; the cards' own overlays are taken
// from the cards, not repeated in the data). A strip is drawn in data.strip.rows rows: the page holds the
// first row, and the others show the same pictures shifted (report.css), so no picture is stored twice.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var enc = encodeURIComponent;
  var pictures = {};
  document.querySelectorAll(".unit-card").forEach(function (card) {
    pictures[card.dataset.layer + "/" + card.dataset.unit] = card.querySelector("img.picture").src;
    data.overlays[Number(card.dataset.overlay)] = card.querySelector("img.overlay").src;
    addRows(card.querySelector(".strip"));
  });

  // The rows after the first: copies of the first row, each shifted one row's width further (--r).
  function addRows(node) {
    var rows = Number(node.style.getPropertyValue("--rows")) || 1;
    var first = node.querySelector(".strip-row");
    for (var r = 1; r < rows; r++) {
      var row = first.cloneNode(true);
      row.style.setProperty("--r", r);
      row.setAttribute("aria-hidden", "true");
      row.querySelector("img.picture").alt = "";
      node.appendChild(row);
    }
    return node;
  }
  function layerTitle(name) { return /^layer/i.test(name) ? name : "Layer " + name; }
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "class") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) {
      if (c) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  function fmt(v, d) {
    if (v === null || v === undefined) return "\u2013";
    if (typeof v !== "number") return String(v);
    if (v !== 0 && Math.abs(v) < 1e-3) return v.toExponential(2);
    return String(Number(v.toPrecision(d || 3)));
  }
  // A strip in data.strip.rows rows (`line`: all images in one row, for a page's main strip).
  function strip(layer, unit, overlay, title, line) {
    var layout = data.strip, rows = line ? 1 : layout.rows;
    return addRows(el("div", {"class": "strip", title: title || "", style: "--rows:" + rows + ";min-width:" +
                              (line ? layout.line_px : layout.row_px) + "px"}, [
      el("div", {"class": "strip-row"}, [
        el("img", {"class": "picture", src: pictures[layer + "/" + unit] || "", alt: "top images of " + layer +
          " unit " + unit}),
        el("img", {"class": "overlay", src: data.overlays[overlay], alt: ""})])
    ]));
  }
  function unitHref(layer, unit) { return "#unit/" + enc(layer) + "/" + unit; }
  function conceptHref(name) { return "#concept/" + enc(name); }
  function conceptLink(name) { return el("a", {href: conceptHref(name), text: name}); }
  function scores(x) {
    return "IoU " + fmt(x.iou) + " \u00b7 crossfit " + fmt(x.crossfit_iou);
  }

  // ---- gallery sorting and filtering
  function sortGallery(section, key) {
    var gallery = section.querySelector(".gallery");
    var cards = Array.prototype.slice.call(gallery.children);
    var byUnit = function (a, b) { return Number(a.dataset.unit) - Number(b.dataset.unit); };
    var by = function (attr) {
      return function (a, b) { return Number(b.dataset[attr]) - Number(a.dataset[attr]) || byUnit(a, b); };
    };
    var cmp = key === "unit" ? byUnit : key === "crossfit" ? by("crossfit") : key === "concept" ?
      function (a, b) { return a.dataset.concept.localeCompare(b.dataset.concept) || by("iou")(a, b); } :
      by("iou");
    cards.sort(cmp).forEach(function (c) { gallery.appendChild(c); });
    section.querySelectorAll("button[data-sort]").forEach(function (b) {
      b.classList.toggle("active", b.dataset.sort === key);
    });
  }
  function filterGallery(section) {
    var only = section.querySelector(".filter-interpretable").checked;
    var cards = section.querySelectorAll(".unit-card"), shown = 0;
    cards.forEach(function (c) {
      var hide = only && c.dataset.interpretable !== "1";
      c.classList.toggle("hidden", hide);
      if (!hide) shown++;
    });
    section.querySelector(".shown").textContent = shown + " of " + cards.length + " units shown";
  }
  document.querySelectorAll(".layer-section").forEach(function (section) {
    section.querySelectorAll("button[data-sort]").forEach(function (b) {
      b.addEventListener("click", function () { sortGallery(section, b.dataset.sort); });
    });
    section.querySelector(".filter-interpretable").addEventListener("change", function () {
      filterGallery(section);
    });
    filterGallery(section);
  });

  // ---- views
  var unitView = document.getElementById("unit-view");
  var conceptView = document.getElementById("concept-view");
  function closeViews() {
    unitView.hidden = true;
    conceptView.hidden = true;
    document.body.style.overflow = "";
  }
  function open(view, children) {
    var panel = view.querySelector(".panel");
    panel.textContent = "";
    panel.appendChild(el("a", {href: "#", "class": "close", title: "close (Esc)", text: "\u00d7"}));
    children.forEach(function (c) { if (c) panel.appendChild(c); });
    (view === unitView ? conceptView : unitView).hidden = true;
    view.hidden = false;
    view.scrollTop = 0;
    document.body.style.overflow = "hidden";
  }
  function row(label, value) {
    return el("tr", {}, [el("th", {text: label}), el("td", {text: value})]);
  }
  function cells(tag, values) {
    return el("tr", {}, values.map(function (v) {
      return typeof v === "object" && v !== null ? el(tag, {}, [v]) : el(tag, {text: fmt(v, 4)});
    }));
  }
  function rulesTable(u) {
    var rows = data.rules.filter(function (r) { return u.labels && u.labels[r[0]]; }).map(function (r) {
      var label = u.labels[r[0]];
      var tr = cells("td", [el("span", {title: r[1], text: r[0]}), conceptLink(label.concept), label.category,
        label.iou, label.crossfit_iou, label.iqr, label.threshold, label.interpretable ? "yes" : "no"]);
      tr.firstChild.className = "rule";
      tr.dataset.rule = r[0];
      if (r[0] === data.label_method) tr.className = "current";
      return tr;
    });
    var head = cells("th", ["rule", "concept", "category", "IoU", "crossfit IoU", "IQR", "threshold",
      "interpretable"]);
    return el("table", {"class": "rules"}, [el("thead", {}, [head]), el("tbody", {}, rows)]);
  }
  function showUnit(layer, unit) {
    var layerData = data.layers[layer];
    var u = layerData && layerData.units[String(unit)];
    if (!u) { open(unitView, [el("h2", {text: "No unit " + unit + " in " + layerTitle(layer)})]); return; }
    var ids = Object.keys(layerData.units).map(Number).sort(function (a, b) { return a - b; });
    var at = ids.indexOf(unit);
    var nav = el("div", {"class": "nav-links"}, [
      at > 0 ? el("a", {href: unitHref(layer, ids[at - 1]), text: "\u2190 unit " + ids[at - 1]}) : null,
      at < ids.length - 1 ?
        el("a", {href: unitHref(layer, ids[at + 1]), text: "unit " + ids[at + 1] + " \u2192"}) : null,
      el("a", {href: conceptHref(u.concept), text: "best units for " + u.concept})
    ]);
    // a strip only where the threshold (hence the region) differs from every one drawn before it
    var coincide = u.top_concepts.every(function (t) { return t.threshold === u.threshold; });
    var drawn = {};
    drawn[u.threshold] = "the strip above";
    var tops = u.top_concepts.map(function (t) {
      var same = drawn[t.threshold];
      if (!same) drawn[t.threshold] = "the " + t.concept + " strip";
      return el("div", {"class": "top-concept" + (same ? " same" : ""), "data-concept": t.concept,
                        "data-threshold": t.threshold}, [
        el("div", {"class": "card-head"}, [conceptLink(t.concept), el("span", {text: t.category}),
          el("span", {text: "IQR " + fmt(t.iqr) + ", threshold " + fmt(t.threshold, 4)}),
          el("span", {"class": "iou", text: scores(t)})]),
        !same ? strip(layer, unit, t.overlay, t.concept + " at threshold " + fmt(t.threshold, 4)) : coincide ? null :
          el("p", {"class": "muted same-region", text: "Same threshold, same region: see " + same + "."})]);
    });
    var topsTitle = "Top " + u.top_concepts.length + " concepts" + (coincide ?
      ": all at the unit's threshold " + fmt(u.threshold, 4) + ", so all outline the region of the strip above" :
      ", each drawn at its own threshold (a strip only where it differs from one drawn before)");
    var samples = u.top_samples.map(function (s, i) { return s + " (" + fmt(u.top_values[i]) + ")"; }).join(", ");
    open(unitView, [
      el("h2", {text: layerTitle(layer) + ", unit " + unit}),
      nav,
      strip(layer, unit, u.overlay, u.concept + " at threshold " + fmt(u.threshold, 4), true),
      el("p", {"class": "muted", text: "Top " + u.top_samples.length + " images of the IoU sample set by peak" +
        " activation; outside the region above the labelling threshold the image is dimmed, the region is" +
        " outlined."}),
      el("table", {"class": "unit-summary"}, [
        row("concept", u.concept + " (" + u.category + "), labelled by the " + data.label_method + " rule"),
        row("IoU", fmt(u.iou, 4) + (u.interpretable ? "  \u2014 interpretable" :
          "  \u2014 not interpretable (needs IoU > " + fmt(data.min_iou) +
          (data.min_iqr !== null ? ", IQR > " + fmt(data.min_iqr) : "") + " and IoU above " +
          fmt(u.baseline_iou, 4) + ")")),
        row("crossfit IoU", fmt(u.crossfit_iou, 4) + " (threshold chosen on one half of the samples, counted" +
          " on the other)"),
        row("whole-image IoU of " + u.concept, fmt(u.baseline_iou, 4)),
        row("IQR", fmt(u.iqr, 4)),
        row("threshold (outlined)", fmt(u.threshold, 4)),
        row("quantile threshold", fmt(u.quantile_threshold, 4)),
        row("top samples (peak activation)", samples)
      ]),
      el("h3", {text: "Label by each rule"}),
      rulesTable(u),
      el("h3", {"class": "top-concepts-title", text: topsTitle}),
      el("div", {"class": "top-concepts" + (coincide ? " coincide" : "")}, tops)
    ]);
  }
  function showConcept(name) {
    var c = data.concepts[name];
    if (!c) { open(conceptView, [el("h2", {text: "No concept " + name})]); return; }
    var counts = Object.keys(c.interpretable).map(function (l) { return l + ": " + c.interpretable[l]; }).join(", ");
    var sections = [];
    Object.keys(c.layers).forEach(function (layer) {
      sections.push(el("h3", {text: layerTitle(layer)}));
      sections.push(el("div", {"class": "concept-units"}, c.layers[layer].map(function (b, i) {
        var u = data.layers[layer].units[String(b.unit)];
        return el("a", {"class": "concept-unit", href: unitHref(layer, b.unit), "data-layer": layer,
                        "data-unit": b.unit, "data-iou": b.iou, "data-threshold": b.threshold}, [
          el("div", {"class": "card-head"}, [
            el("span", {"class": "unit-no", text: "#" + (i + 1) + "  unit " + b.unit}),
            el("span", {text: "threshold " + fmt(b.threshold, 4)}),
            el("span", {"class": "muted", text: "labelled " + u.concept}),
            el("span", {"class": "iou", text: scores(b)})]),
          strip(layer, b.unit, b.overlay, name + " at threshold " + fmt(b.threshold, 4))]);
      })));
    });
    open(conceptView, [
      el("h2", {text: "Concept " + name + " (" + c.category + ")"}),
      el("p", {"class": "baseline", text: "Whole-image baseline IoU " + fmt(c.baseline_iou, 4) +
        ": the IoU of a mask covering every pixel (the concept's share of pixels)."}),
      el("p", {"class": "muted", text: "Interpretable units labelled " + name + ": " + counts + ". Below: per" +
        " layer, the best units for " + name + " by the " + data.label_method + " rule, each drawn at its" +
        " threshold for " + name + "."}),
      sections.length ? null : el("p", {text: "No unit overlaps this concept."})
    ].concat(sections));
  }
  function route() {
    var parts = location.hash.replace(/^#/, "").split("/");
    try {
      if (parts[0] === "unit" && parts.length === 3) {
        showUnit(decodeURIComponent(parts[1]), Number(parts[2]));
      } else if (parts[0] === "concept" && parts.length >= 2) {
        showConcept(decodeURIComponent(parts.slice(1).join("/")));
      } else {
        closeViews();
        if (parts[0] === "layer" && parts.length === 2) {
          var name = decodeURIComponent(parts[1]);
          document.querySelectorAll(".layer-section").forEach(function (s) {
            if (s.dataset.layer === name) s.scrollIntoView();
          });
        }
      }
    } catch (e) {
      closeViews();
    }
  }
  [unitView, conceptView].forEach(function (view) {
    view.addEventListener("click", function (event) {
      if (event.target === view) location.hash = "";
    });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && (!unitView.hidden || !conceptView.hidden)) location.hash = "";
  });
  window.addEventListener("hashchange", route);
  route();
  window.gandissectReport = { el: el, layerTitle: layerTitle };  // shared with the scripts that run after this one
})();
