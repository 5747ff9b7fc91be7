// Causal results on the unit and concept pages, from the JSON in #causal-data (see causal.py). report.js draws
// a page first (its hashchange listener was added before this one); this script then adds to it: on a unit's
// page the causal label beside the correlational one, the unit's ACE and rank (with a schema-2 ace.json its
// removal, insertion and ACE effects with 95% intervals, significance and ranks), and which rules agree; on a
// concept's page, per layer, the top units by ACE (schema 2: the top units of each ranking with intervals,
// significance and separation, how the samples were chosen and what the significant units do together on
// held-out samples) and the figures with their captions. The page without causal results does not carry this
// script at all.
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

  var DIRECTIONS = ["removal", "insertion", "ace"];
  var NAMES = {removal: "removal", insertion: "insertion", ace: "ACE"};
  var FOR = {removal: "for removing ", insertion: "for inserting ", ace: "by ACE on "};
  var REASONS = {
    separated: "settled (the top {k} distinguishable from the next unit)",
    stable: "settled (the same top {k} in at least 90% of bootstrap resamples)",
    budget: "not settled when the budget ran out", fixed: "a fixed number"};
  var defs = causal.definitions || {};
  var SIGNIFICANT = "significant: " + (defs.significant ||
    "effect > 0 with a Holm-adjusted p-value below 0.05 over every unit measured");
  function interval(low, high) { return "[" + fmt(low) + ", " + fmt(high) + "]"; }
  function pct(v) { return v === null || v === undefined ? "\u2013" : fmt(100 * v, 2) + "%"; }
  function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }

  // ---- a unit's page
  function aceText(a) {
    return el("span", {"class": "ace", "data-concept": a.concept, "data-ace": a.ace, "data-rank": a.rank}, [
      "ACE " + fmt(a.ace, 4) + " on ", conceptLink(a.concept), ": rank " + a.rank + " of " + a.of +
      " units (inserted " + fmt(a.inserted) + ", ablated " + fmt(a.ablated) + ")"]);
  }
  function effectCell(a, d) {
    var e = a.effects[d];
    if (!e) return el("td", {text: "\u2013"});
    var rank = e[4] === null ? "" : "rank " + e[4] + " of " + a.of;
    var title = (rank ? rank + " units " + FOR[d] + a.concept + "; " : "") + "Holm-adjusted p = " + fmt(e[5]);
    return el("td", {"class": "effect", "data-direction": d, "data-significant": e[3] ? "1" : "0",
                     "data-rank": e[4] === null ? "" : e[4], title: title}, [
      fmt(e[0]) + " " + interval(e[1], e[2]),
      e[3] ? el("span", {"class": "sig", title: SIGNIFICANT, text: " \u2713 significant"}) : null,
      rank ? el("span", {"class": "rank", text: rank}) : null]);
  }
  function effectsTable(entries, own) {
    var head = el("tr", {}, ["concept"].concat(DIRECTIONS.map(function (d) { return NAMES[d]; })).map(function (h) {
      return el("th", {text: h, title: defs[h.toLowerCase()] || ""});
    }));
    var rows = entries.map(function (a) {
      return el("tr", {"data-concept": a.concept}, [
        el("td", {}, [conceptLink(a.concept), a.concept === own ? " (its label)" : ""])
      ].concat(DIRECTIONS.map(function (d) { return effectCell(a, d); })));
    });
    return el("div", {"class": "causal-effects"}, [
      el("table", {"class": "causal-effects"}, [el("thead", {}, [head]), el("tbody", {}, rows)]),
      el("p", {"class": "muted", text: "The share of the image the concept loses when the unit is switched off " +
        "(removal), gains when it is switched on (insertion), and has with it on rather than off (ACE), with its " +
        "95% interval; \u2713 " + SIGNIFICANT + " (Holm's correction); rank among the layer's units measured, in " +
        "that direction."})]);
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
      var full = c.ace.filter(function (a) { return a.effects; });
      var plain = c.ace.filter(function (a) { return !a.effects; });
      var own = plain.length > 0 && plain[0].concept === u.concept;
      var parts = [c.measured && !own ? null : own ? aceText(plain[0]) :
        el("span", {"class": "muted", text: "no " + (full.length ? "causal effect" : "ACE") + " measured for " +
          u.concept}), full.length ? effectsTable(full, u.concept) : null];
      plain.slice(own ? 1 : 0).forEach(function (a, i) { parts.push(i ? "; " : "; other concepts: ", aceText(a)); });
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
  function whisker(t, lo, hi) {
    var box = el("span", {"class": "whisker" + (t.significant ? " sig" : "")});
    if (t.low === null || t.high === null || t.mean === null || !(hi > lo)) return box;
    var at = function (v) { return (100 * (v - lo) / (hi - lo)).toFixed(1) + "%"; };
    box.appendChild(el("span", {"class": "zero", style: "left:" + at(0)}));
    box.appendChild(el("span", {"class": "range", style: "left:" + at(t.low) + ";width:" +
      (100 * (t.high - t.low) / (hi - lo)).toFixed(1) + "%"}));
    box.appendChild(el("span", {"class": "mean", style: "left:" + at(t.mean)}));
    return box;
  }
  function rankingTable(layer, d, r) {
    var lows = r.top.map(function (t) { return t.low; }).filter(function (v) { return v !== null; });
    var highs = r.top.map(function (t) { return t.high; }).filter(function (v) { return v !== null; });
    var lo = Math.min.apply(null, [0].concat(lows)), hi = Math.max.apply(null, [0].concat(highs));
    var head = el("tr", {}, [["#"], ["unit"], ["effect", defs[d]], ["95% interval"],
      ["", "mean (dot) and 95% interval (line) on one scale per table; the tick is 0"], ["significant", SIGNIFICANT],
      ["distinguishable from the next", defs.separated || "the next unit's effect is significantly lower"],
      ["IoU"], ["labelled"]].map(function (h) { return el("th", {text: h[0], title: h[1] || ""}); }));
    var rows = r.top.map(function (t, k) {
      var u = data.layers[layer].units[String(t.unit)];
      var sep = k === r.of - 1 || t.separated === null ? "\u2013" : t.separated ? "yes" : "no";
      return el("tr", {"data-unit": t.unit, "data-significant": t.significant ? "1" : "0",
                       "data-separated": sep}, [
        el("td", {text: String(k + 1)}), el("td", {}, [unitLink(layer, t.unit)]), el("td", {text: fmt(t.mean)}),
        el("td", {"class": "interval", text: interval(t.low, t.high)}), el("td", {}, [whisker(t, lo, hi)]),
        el("td", {"class": t.significant ? "sig" : "", text: t.significant ? "\u2713" : "",
                  title: "Holm-adjusted p = " + fmt(t.p)}),
        el("td", {"class": "separated", text: sep}), el("td", {text: fmt(t.iou)}),
        el("td", {}, [u ? conceptLink(u.concept) : null])]);
    });
    return el("table", {"class": "causal-ranking", "data-direction": d}, [el("thead", {}, [head]),
                                                                          el("tbody", {}, rows)]);
  }
  function rankingBlock(layer, d, r) {
    var title = "Top " + r.top.length + " of " + r.of + " units for " + NAMES[d] + ": " + r.significant +
      " significant";
    return d === "ace" ? el("details", {"class": "causal-ace"}, [el("summary", {text: title}),
                                                                 rankingTable(layer, d, r)]) :
      [el("h5", {text: title}), rankingTable(layer, d, r)];
  }
  function samplesText(entry, ev) {
    var s = ev.stopping, n = entry.samples;
    var out = (n === undefined ? "Held-out samples" : plural(n, "held-out sample")) +
      (entry.seed === undefined ? "" : " (seed " + entry.seed + ")");
    if (s && s.rule === "auto") {
      var reasons = Object.keys(s.reasons).map(function (d) {
        return (NAMES[d] || d) + ": " + (REASONS[s.reasons[d]] || s.reasons[d]).replace("{k}", s.top);
      });
      out += ", chosen automatically: measured in rounds (" + s.rounds.join(", ") + " samples in all) until " +
        "the top " + s.top + " units of each ranking settled, at most " + s.budget + " samples; " +
        reasons.join("; ");
    } else if (s && s.rule === "fixed") {
      out += ", a fixed number";
    }
    return out + ".";
  }
  function setSentence(name, d, sets, r) {
    if (!sets || !sets.length) {
      return r && r.significant === 0 ? "No unit is significant for " + NAMES[d] + ": no held-out set." : null;
    }
    var all = sets[sets.length - 1], k = all.units.length;
    var who = (r && k === r.significant ? "the " + plural(k, "significant " + NAMES[d] + " unit") :
      "the top " + plural(k, NAMES[d] + " unit")) + " (" + all.units.join(", ") + ")";
    var half = all.low === null || all.high === null ? null : (all.high - all.low) / 2;
    var what = all.description || (d === "removal" ? "removes " + pct(all.mean) + " \u00b1 " + pct(half) + " of " +
      name + " pixels" : "adds " + pct(all.mean) + " \u00b1 " + pct(half) + " of the image as " + name);
    var fewer = sets.slice(0, -1).map(function (s) {
      return "top " + s.units.length + (s.description ? ": " + s.description : "");
    });
    return (d === "removal" ? "Switching off " : "Switching on ") + who + (k > 1 ? " together " : " ") + what +
      " on " + (all.samples === null ? "" : all.samples + " ") + "held-out samples" +
      (all.seed === null ? "" : " (seed " + all.seed + ")") + (all.significant ? "" : " (not significant)") + "." +
      (fewer.length ? " Fewer: " + fewer.join("; ") + "." : "");
  }
  function settingsText(name, ev) {
    var b = ev.baseline, counted = Object.keys(ev.missing);
    var missing = counted.filter(function (k) { return ev.missing[k] > 0; });
    var alpha = ev.alpha === null ? "" : ", p < " + ev.alpha;
    return [ev.insertion_value ? "Value inserted: " + ev.insertion_value + "." : "",
      ev.correction ? "Significance: " + ev.correction.replace(/^holm\b/, "Holm") + alpha + "." : "",
      b[0] === null ? "" : name + " covers " + pct(b[0]) + " of an unedited image (95%: " + pct(b[1]) + " to " +
        pct(b[2]) + ").",
      missing.length ? "Unreadable by the segmenter, left out: " + missing.map(function (k) {
        return ev.missing[k] + " " + k.replace(/_/g, " ");
      }).join(", ") + "." : counted.length ? "The segmenter read every image." : ""].filter(Boolean).join(" ");
  }
  function evidenceBlock(name, layer, entry) {
    var ev = entry.evidence;
    var notes = ["removal", "insertion", "ace", "share", "separated"].filter(function (k) { return defs[k]; })
      .map(function (k) { return (k === "ace" ? "ACE" : k) + ": " + defs[k] + "."; });
    var sentences = ["removal", "insertion"].map(function (d) {
      return setSentence(name, d, ev.sets[d], ev.rankings[d]);
    }).filter(Boolean);
    var nodes = [
      el("p", {"class": "causal-samples", text: samplesText(entry, ev)}),
      el("p", {"class": "muted causal-settings", text: settingsText(name, ev)}),
      sentences.length ? el("div", {"class": "causal-sets"}, [
        el("b", {text: "The significant units together, on samples the ranking never saw:"}),
        el("ul", {}, sentences.map(function (t) { return el("li", {text: t}); }))]) : null];
    DIRECTIONS.forEach(function (d) {
      if (ev.rankings[d]) nodes = nodes.concat(rankingBlock(layer, d, ev.rankings[d]));
    });
    return nodes.concat([notes.length ? el("p", {"class": "muted causal-notes", text: notes.join(" ") +
      " Intervals: 95%; \u2713 " + SIGNIFICANT + "."}) : null]);
  }
  function figure(f) {
    return el("figure", {"class": "causal-figure", "data-name": f[0]}, [
      el("img", {src: f[1], alt: f[2] || f[0]}),
      el("figcaption", {}, f[2] ? [el("b", {text: f[2] + ". "}), f[3] + " ",
                                   el("span", {"class": "file", text: "(" + f[0] + ")"})] : [f[0]])]);
  }
  function addToConcept(view, name) {
    var layers = causal.concepts[name];
    var panel = view.querySelector(".panel");
    if (!layers || !panel) return;
    Object.keys(layers).forEach(function (layer) {
      var entry = layers[layer];
      var settings = entry.definition ? entry.definition + (entry.samples !== undefined ? " (" + entry.samples +
        " samples, seed " + entry.seed + ")" : "") : "";
      var where = /^layer/i.test(layer) ? layer : "layer " + layer;
      var title = entry.evidence ? "Causal effects of the " + entry.of + " units measured in " + where +
        " on " + name : entry.of ? "Top " + entry.top.length + " of " + entry.of + " units by causal effect " +
        "(ACE) in " + where : "Causal results in " + where;
      var body = entry.evidence ? evidenceBlock(name, layer, entry) : [
        settings ? el("p", {"class": "muted", text: settings}) : null,
        entry.top.length ? aceTable(layer, entry) : null];
      var block = el("div", {"class": "causal-concept", "data-layer": layer}, [el("h4", {text: title})].concat(body,
        [entry.figures.length ? el("div", {"class": "causal-figures"}, entry.figures.map(figure)) : null]));
      var target = null;
      view.querySelectorAll(".concept-units").forEach(function (box) {
        var first = box.querySelector(".concept-unit");
        if (first && first.dataset.layer === layer) target = box;
      });
      if (target) {
        target.parentNode.insertBefore(block, target);
        target.parentNode.insertBefore(el("h4", {text: "Best units by IoU in " + where}), target);
      } else {
        panel.appendChild(el("h3", {text: window.gandissectReport.layerTitle(layer)}));
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
