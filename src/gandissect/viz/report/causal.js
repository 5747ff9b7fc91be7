// Causal results on the unit and concept pages, from the JSON in #causal-data (see causal.py). report.js draws
// a page first (its hashchange listener was added before this one); this script then adds to it: on a unit's
// page the causal label beside the correlational one, the unit's ACE and rank, and which rules agree; on a
// concept's page, per layer, the top units by ACE and the figures. The page without causal results does not
// carry this script at all.
(function () {
  "use strict";
  var causal = JSON.parse(document.getElementById("causal-data").textContent);
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var enc = encodeURIComponent;

  var el = window.gandissectReport.el;
  function text(s) { return document.createTextNode(s); }
  function fmt(v, d) {
    if (v === null || v === undefined) return "\u2013";
    if (typeof v !== "number") return String(v);
    if (v !== 0 && Math.abs(v) < 1e-3) return v.toExponential(2);
    return String(Number(v.toPrecision(d || 3)));
  }
  function conceptLink(name) {
    return data.concepts[name] ? el("a", {href: "#concept/" + enc(name), text: name}) : el("span", {text: name});
  }
  function unitLink(layer, unit) { return el("a", {href: "#unit/" + enc(layer) + "/" + unit, text: String(unit)}); }

  // ---- a unit's page
  function aceText(a) {
    return el("span", {"class": "ace", "data-concept": a.concept, "data-ace": a.ace, "data-rank": a.rank}, [
      "ACE " + fmt(a.ace, 4) + " on ", conceptLink(a.concept), ": rank " + a.rank + " of " + a.of +
      " units (inserted " + fmt(a.inserted) + ", ablated " + fmt(a.ablated) + ")"]);
  }
  function addToUnit(view, layer, unit) {
    var c = (causal.units[layer] || {})[String(unit)];
    var u = data.layers[layer] && data.layers[layer].units[String(unit)];
    var summary = view.querySelector("table.unit-summary");
    if (!c || !u || !summary) return;
    var conceptRow = summary.querySelector("tr");
    if (c.label) {
      var label = c.label, none = label.concept === null;
      conceptRow.lastChild.appendChild(text(" \u00b7 "));
      conceptRow.lastChild.appendChild(el("span", {
        "class": "causal-label " + (none ? "none" : label.agrees ? "agree" : "disagree"),
        "data-concept": label.concept || "", "data-agrees": label.agrees ? "1" : "0",
        title: "the concept this unit draws when intervened on (labels.json)"}, [
        "causal label: ", none ? "none" : conceptLink(label.concept), " (effect " + fmt(label.effect) + ")" +
        (none ? "" : label.agrees ? " \u2713 agrees" : " \u2717 differs")]));
    }
    if (causal.ace_layers.indexOf(layer) >= 0) {
      var parts = [c.measured ? aceText(c.ace[0]) :
        el("span", {"class": "muted", text: "no ACE measured for " + u.concept})];
      var others = c.measured ? c.ace.slice(1) : c.ace;
      others.forEach(function (a, i) { parts.push(i ? "; " : "; other concepts: ", aceText(a)); });
      var row = el("tr", {"class": "causal-effect"}, [el("th", {text: "Causal effect"}), el("td", {}, parts)]);
      conceptRow.parentNode.insertBefore(row, conceptRow.nextSibling);
    }
    var rules = view.querySelector("table.rules");
    if (rules && c.label) {
      var head = rules.querySelector("thead tr");
      head.appendChild(el("th", {text: "= causal label", title: "whether the rule's label is the causal label"}));
      rules.querySelectorAll("tbody tr").forEach(function (tr) {
        var agrees = c.label.rules.indexOf(tr.dataset.rule) >= 0;
        tr.classList.toggle("agrees-causal", agrees);
        tr.appendChild(el("td", {"class": "causal-agree", text: agrees ? "\u2713" : ""}));
      });
    }
  }

  // ---- a concept's page
  function aceTable(layer, entry) {
    var head = el("tr", {}, ["#", "unit", "ACE", "IoU", "inserted", "ablated", "labelled"].map(function (h) {
      return el("th", {text: h});
    }));
    var rows = entry.top.map(function (t) {
      var u = data.layers[layer].units[String(t.unit)];
      return el("tr", {"data-unit": t.unit, "data-ace": t.ace}, [
        el("td", {text: String(t.rank)}), el("td", {}, [unitLink(layer, t.unit)]), el("td", {text: fmt(t.ace, 4)}),
        el("td", {text: fmt(t.iou, 4)}), el("td", {text: fmt(t.inserted)}), el("td", {text: fmt(t.ablated)}),
        el("td", {}, [u ? conceptLink(u.concept) : null])]);
    });
    return el("table", {"class": "ace-top"}, [el("thead", {}, [head]), el("tbody", {}, rows)]);
  }
  function addToConcept(view, name) {
    var layers = causal.concepts[name];
    var panel = view.querySelector(".panel");
    if (!layers || !panel) return;
    Object.keys(layers).forEach(function (layer) {
      var entry = layers[layer];
      var settings = entry.definition ? entry.definition + (entry.samples !== undefined ? " (" + entry.samples +
        " samples, seed " + entry.seed + ")" : "") : "";
      var block = el("div", {"class": "causal-concept", "data-layer": layer}, [
        el("h4", {text: entry.of ? "Top " + entry.top.length + " of " + entry.of + " units by causal effect " +
          "(ACE) in layer " + layer : "Causal results in layer " + layer}),
        settings ? el("p", {"class": "muted", text: settings}) : null,
        entry.top.length ? aceTable(layer, entry) : null,
        entry.figures.length ? el("div", {"class": "causal-figures"}, entry.figures.map(function (f) {
          return el("figure", {"class": "causal-figure", "data-name": f[0]}, [
            el("img", {src: f[1], alt: f[0]}), el("figcaption", {text: f[0]})]);
        })) : null
      ]);
      var target = null;
      view.querySelectorAll(".concept-units").forEach(function (box) {
        var first = box.querySelector(".concept-unit");
        if (first && first.dataset.layer === layer) target = box;
      });
      if (target) {
        target.parentNode.insertBefore(block, target);
        target.parentNode.insertBefore(el("h4", {text: "Best units by IoU in layer " + layer}), target);
      } else {
        panel.appendChild(el("h3", {text: "Layer " + layer}));
        panel.appendChild(block);
      }
    });
  }

  function route() {
    var parts = location.hash.replace(/^#/, "").split("/");
    var unitView = document.getElementById("unit-view"), conceptView = document.getElementById("concept-view");
    try {
      if (parts[0] === "unit" && parts.length === 3 && !unitView.hidden) {
        addToUnit(unitView, decodeURIComponent(parts[1]), Number(parts[2]));
      } else if (parts[0] === "concept" && parts.length >= 2 && !conceptView.hidden) {
        addToConcept(conceptView, decodeURIComponent(parts.slice(1).join("/")));
      }
    } catch (e) {
      // a malformed address: report.js has closed the views
    }
  }
  window.addEventListener("hashchange", route);
  route();
})();
