# shellcheck shell=bash
# tests/bench/catalog.sh - the benchmarks' job catalog, one generator for all of them (spine.sh,
# run, and common.sh's scripts).  Source it; it defines one function and nothing else.

# gen_catalog N FILE ID-PREFIX [EXTRA-JSON-FIELDS] [DIGITS] - N product-photo jobs like a shop's
# catalog export: distinct prompts of ~124 characters, gpt-image-1-mini, low, 1024x1024, an id
# ID-PREFIX-NNNNNN and {"sku": NNNNNN} (DIGITS wide, 6 by default).  EXTRA is inserted as is
# before "metadata", e.g. '"output_format":"png",'.  Ids are idempotency keys (per team,
# across batches): catalogs that share a Redis need different prefixes.
gen_catalog() {
    awk -v n="$1" -v pfx="$3" -v extra="${4:-}" -v digits="${5:-6}" 'BEGIN {
        nm = split("ceramic,walnut,brushed steel,linen,leather,recycled glass,bamboo,matte black,terracotta,oak", mat, ",")
        no = split("coffee mug,desk lamp,table runner,backpack,water bottle,planter,throw pillow,wall clock,serving bowl,notebook,candle holder,chair", obj, ",")
        ns = split("white seamless background,marble countertop,sunlit kitchen,minimalist shelf,rustic wooden table,soft grey backdrop", scene, ",")
        nl = split("soft diffused lighting,golden hour light,studio strobe lighting,natural window light", light, ",")
        num = "%0" digits "d"
        for (i = 0; i < n; i++) {
            p = sprintf("Product photo of a %s %s on a %s, %s, sharp focus, catalog style, SKU %06d",
                mat[i % nm + 1], obj[int(i / nm) % no + 1], scene[int(i / (nm * no)) % ns + 1],
                light[int(i / (nm * no * ns)) % nl + 1], i)
            printf "{\"id\":\"%s-" num "\",\"prompt\":\"%s\",\"model\":\"gpt-image-1-mini\",\"quality\":\"low\",\"size\":\"1024x1024\",%s\"metadata\":{\"sku\":\"" num "\"}}\n", pfx, i, p, extra, i
        }
    }' >"$2"
}
