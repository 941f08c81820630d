#!/usr/bin/env python3
"""bill.py - price imgq-sim's bill (GET /sim/bill) with the catalog, independently of imgq's C
pricing code, so a test can reconcile imgq's ledger with what the provider side billed.

Usage: bill.py CATALOG.json BILL.json [--route NAME] [--json]
Prints the total in micro-dollars (or, with --json, {"total": N, "entries": [...]}).

The simulator bills a generation from the true counts it worked with when its answer reported
them ("usage": "reported"), and at the catalog's ceiling for the request when the answer left
the usage out or spoiled it ("missing", "unusable"): the most the call could have cost, the
figure imgq must charge then.  Money is integers: token counts times micro-dollars per million
tokens, times the route's multiplier in millionths, rounded half up once per call.
"""
import json
import sys


def lookup(table, quality, size):
    """A quality x size table {"WxH": {"q": v}}: the quality's row; no quality or "auto"
    without its own row: the largest of the size (catalog.c table_lookup)."""
    row = table.get(size)
    if row is None:
        raise KeyError("no row for size %s" % size)
    if quality is not None and quality in row:
        return row[quality]
    if quality is None or quality == "auto":
        return max(row.values())
    raise KeyError("no row for %s at %s" % (quality, size))


def round_call(sum_micro_units, scale, mult_ppm):
    den = scale * 1000000
    return (sum_micro_units * mult_ppm + den // 2) // den


def price(catalog, e, route="list"):
    m = catalog["models"][e["model"]]
    mult = catalog["routes"][route]["multiplier_ppm"]
    p = m.get("prices", {})
    if m["billing"] == "per_image":
        each = None
        if "image_prices" in m:
            try:
                each = lookup(m["image_prices"], e.get("quality"), e["size"])
            except KeyError:
                each = None
        if each is None:
            each = p["per_image"]
        # billed per image generated; a reply without usage is billed for the images asked
        images = e["images"] if e["usage"] == "reported" else e["n"]
        return round_call(images * each, 1, mult)
    t = e["tokens"]
    if e["usage"] == "reported":
        text_in, image_in, image_out, text_out = (t["text_in"], t["image_in"], t["image_out"],
                                                  t["text_out"])
    else:
        n = e["n"]
        if "output_tokens" not in m:
            raise SystemExit("bill.py: %s has no output-token table to bound its ceiling" %
                             e["model"])
        per_image = lookup(m["output_tokens"], e.get("quality"), e["size"])
        text_in = max(e["prompt_bytes"], 1) * n
        image_in = e["references"] * m.get("ref_image_tokens", 0) * n
        image_out = per_image * n
        text_out = 0
    s = (text_in * p.get("text_in", 0) + image_in * p.get("image_in", 0) +
         image_out * p.get("image_out", 0) + text_out * p.get("text_out", 0))
    return round_call(s, 1000000, mult)


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    route = "list"
    if "--route" in argv:
        route = argv[argv.index("--route") + 1]
        args.remove(route)
    if len(args) != 2:
        sys.stderr.write(__doc__)
        return 2
    catalog = json.load(open(args[0]))
    bill = json.load(open(args[1]))
    if bill.get("dropped"):
        raise SystemExit("bill.py: the simulator dropped %d entries" % bill["dropped"])
    entries = []
    for e in bill["generations"]:
        entries.append(dict(e, micros=price(catalog, e, route)))
    total = sum(e["micros"] for e in entries)
    if "--json" in argv:
        print(json.dumps({"total": total, "entries": entries}))
    else:
        print(total)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
