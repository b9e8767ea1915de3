// Package enforcement owns the state the gateway enforces from and its
// rules: the key and subscription records the control plane writes to
// Redis, the counters, watermarks, refusals, blocks and quota outboxes the
// processors keep there, every Lua script that touches them, the quota
// rule (limit → thresholds → block) and billing-period arithmetic. The
// gateway's Caddy module, the processors, the control plane and its drift
// check read and write Redis through it, and compute no rule of their own.
//
// Files by concern: keys.go (every Redis name), record.go and codec.go (the
// records and their encoding), recordstore.go (writing and reading them),
// allow.go (a key's decision for one request), block.go (the quota rule
// and the block), budget.go (the hard-budget rule: rating a period's
// counters against a record's budget, and the same block), period.go (billing periods), counter.go (counting,
// watermarks, refusals), meter.go (the meters a subscription record
// carries), crossing.go and outbox.go (threshold crossings and their
// outboxes), usage.go and meterusage.go (the drift check's reads and
// heals, of the request counters and of the meters), scan.go
// (the nodes a SCAN walks on Redis Cluster). A Lua script lives next to
// the Go that calls it, and a Lua twin of a Go rule next to that rule.
//
// # Layout
//
// Redis is the gateway's source of truth, so the layout below is a
// contract; change it only together with every reader. Every key of one
// subscription carries its id as a Redis Cluster hash tag ({S} below), so
// one script touches one slot.
//
// A record is one Redis hash. Field names are snake_case, times are Unix
// seconds (0 = not set), lists are JSON arrays of strings, booleans are "0"
// or "1". Readers ignore fields they do not know, so fields can be added.
//
//	veil:key:<hash>   key record; <hash> is the hex SHA-256 of the plaintext key (apikey.Hash)
//	  key_id, subscription_id, api_id   ids
//	  status            active | suspended | revoked | expired
//	  methods           JSON array of allowed methods, [] = all
//	  routes            JSON array of route patterns (see [KeyRecord.Allows]), [] = all
//	  rate_per_second   per-key limit, 0 = the subscription's
//	  rate_per_minute   per-key limit, 0 = the subscription's
//	  expires_at        Unix seconds, 0 = never
//	  grace_until       Unix seconds, 0 = none; a rotated-out key is valid until then
//	  version           writer's monotonic version, a positive decimal
//
//	veil:sub:{S}      subscription record
//	  api_id, plan_id   ids
//	  status            trialing | active | past_due | suspended | canceled
//	  period_start      Unix seconds, start of the current billing period (inclusive)
//	  period_end        Unix seconds, end of the current billing period (exclusive)
//	  prev_period_start Unix seconds, start of the period before, set when a write rolls the period
//	  quota_requests    requests per period ([Limit]), -1 = unlimited
//	  quota_hard        "1": block over quota; "0": overage is billed
//	  rate_per_second   0 = no limit
//	  rate_per_minute   0 = no limit
//	  meters            JSON array of the meters the plan version prices ([MeterSpec]), [] or absent
//	                    (a record written before meters) = none:
//	                    {"slug", "aggregation" (count|sum|max|unique_count), "field",
//	                     "filter": {"methods": [], "routes": [], "status_classes": []},
//	                     "quota": "<integer at the meter's scale>" (absent = unlimited),
//	                     "quota_hard": bool}
//	  unpaid_invoice_id, unpaid_invoice_number
//	                    the invoice whose missed payment made the subscription past_due or
//	                    suspended (the gateway names it: a warning header, a 402); empty or
//	                    absent = none, and a suspension without one is an admin's (403)
//	  suspend_at        Unix seconds when a past_due subscription is suspended, 0 or absent = none
//	  budget            the hard budget ([Budget]), JSON with decimals as strings; "" or absent = none:
//	                    {"amount", "currency", "base_fee", "charges": [{"meter", "model", "included",
//	                     "unit_price", "package_size", "tiers": [{"up_to", "unbounded", "unit_price",
//	                     "flat"}]}]}, the plan version's terms; its key is the SHA-1 (hex) of the
//	                    field as stored ([SubscriptionRecord.BudgetKey])
//	  version           as for keys
//
//	veil:block:{S}    a string: Unix seconds until which the gateway refuses the
//	                  subscription's calls (429, hard quota used up); the key
//	                  expires then, so a new period needs no write. A hard
//	                  meter quota used up sets the same block: it refuses every
//	                  call of the subscription, not only the calls the meter selects;
//	                  so does a hard budget used up (the period counter's
//	                  budget_over names the budget), which the gateway answers
//	                  as budget-exceeded rather than quota-exhausted
//
//	veil:rl:{S}:<limit>   the gateway's rate limit state (internal/ratelimit), one key per
//	                      limit: k:<key id>:s, k:<key id>:m, s:s, s:m
//
// The processors' state (the counters hold admitted requests only; a
// meter counts only billable events its filter selects: no refusal, no
// 5xx). Every counter, meter and set of one batch changes in one script
// call with the watermark (see countScript), so a replayed batch changes
// nothing:
//
//	veil:wm:{S}                        field <partition> = last Kafka offset applied for S from that partition
//	veil:usage:{S}:p:<period_start>    period counter: requests, units_micro, period_end,
//	                                   crossed_80|90|100 (the quota each threshold fired for);
//	                                   per meter of the record, m:<slug> = its value, an integer at
//	                                   the meter's scale (count and sum add, max keeps the largest),
//	                                   and crossed_80|90|100:<slug> (the meter quota each fired for);
//	                                   budget_over = the key of the record's budget found used up in
//	                                   the period (see budget.go), which keeps the block through record
//	                                   writes and heals while the record holds that budget
//	veil:usage:{S}:p:<period_start>:u:<slug>  a unique_count meter's set of key ids (its value
//	                                   is the SCARD), same ttl as the period counter
//	veil:usage:{S}:k:<key id>:<YYYYMMDD> one key's counter of one UTC day: requests, units_micro
//	veil:overflow:{S}                  refused events, field <partition>:<offset> = "mismatch" (another
//	                                   API's event) or "1" (would overflow a counter)
//	veil:comp:{S}:<topic>:<partition>:<offset>  marker of an event taken back out of its counters
//	veil:quota:outbox:{S}              list of threshold crossings waiting for veil.quota.events (see [Crossing])
//
// # Versions
//
// Every record write carries the writer's version and lands only when the
// stored version is lower (compare-and-set in one Lua script), so a write
// that arrives late never overwrites a newer one, whatever the order in
// which outbox jobs and reconciliation run. A stored record without a
// readable version counts as older than any write, so writes heal garbage.
//
// Key records of dead keys clean themselves up: a key with an expiry or a
// grace period expires from Redis 24 hours after the later of the two.
//
// # Reading
//
// Decoding is strict: a record with a missing or garbled field is an error
// naming the field ([ErrCorruptRecord]), never a record with zero values, so
// the gateway fails closed. The one exception is a subscription record's
// meters, absent from the records written before meters existed: absent
// means none, garbled is an error.
package enforcement
