# The census of a cluster's stores (docker/test-cluster).
#
# Input (jq --slurp): one object per node,
#   {"node": NAME, "subs": [event types] or "all", "events": [envelopes, in store order]}
# Argument $allow: events a node may lack because they were published while a fault was
# under way (PUB/SUB does not deliver to a subscriber that is down or cut off), as windows
# of each origin's sequence:
#   {"NODE": {"ORIGIN": [[after_seq, up_to_seq], ...], ...}, ...}
# ({} for the strict census.)
#
# Output: one object per node with what it should hold, what it holds, and every problem:
# missing (not allowed), extra (not subscribed), doubled (id or origin+epoch+seq twice), out
# of order (a line's seq not increasing in store order), gaps in its own sequence (per
# epoch), and events whose copies disagree across nodes (same id, different
# origin/epoch/seq/type; or one origin+epoch+seq under two ids).

# The coordinator's decisions reach every node whatever its pool subscribes to
# (Node.subscribedTypes in Sources/CENode/Node.swift).
def decisions: ["gate_passed", "gate_timed_out", "gate_rejected", "resolution_needed", "conflict_closed", "pool_up", "pool_down"];

# An origin numbers its events per epoch (its store): order and "once" hold per line.
def line: [.origin, (.epoch // "")];

def short: {id, origin, seq, event_type};

. as $nodes
| ([$nodes[].events[]] | group_by(.id)) as $byId
| ($byId | map(.[0])) as $all
| ($byId | map(select((map([.origin, (.epoch // ""), .seq, .event_type]) | unique | length) > 1) | .[0].id)) as $disagree
| ($all | group_by(line + [.seq]) | map(select(length > 1) | map(.id))) as $seqReused
| $nodes | map(
    . as $n
    | (if $n.subs == "all" then null else ($n.subs + decisions) end) as $types
    | ($all | map(select(.origin == $n.node or $types == null or (.event_type as $t | $types | index($t) != null)))) as $expected
    | ($allow[$n.node] // {}) as $window
    | ($n.events | map(.id)) as $held
    | ($held | map({key: ., value: true}) | from_entries) as $heldSet
    | ($expected | map(select($heldSet[.id] | not))) as $absent
    | ($absent | map(select(. as $e | any(($window[$e.origin] // [])[]; $e.seq > .[0] and $e.seq <= .[1])))) as $excused
    | ($expected | map({key: .id, value: true}) | from_entries) as $expectedSet
    | {
        node: $n.node,
        expected: ($expected | length),
        held: ($n.events | length),
        origins: ($n.events | map(.origin) | unique),
        missing: ($absent - $excused | map(short)),
        excused: ($excused | map(short)),
        extra: ($n.events | map(select($expectedSet[.id] | not)) | map(short)),
        doubled_ids: ($held | group_by(.) | map(select(length > 1) | .[0])),
        doubled_seqs: ($n.events | group_by(line + [.seq]) | map(select(length > 1) | {origin: .[0].origin, epoch: .[0].epoch, seq: .[0].seq})),
        out_of_order: (
          $n.events | map(line) | unique | map(
            . as $l | [$n.events[] | select(line == $l) | .seq] as $s
            | select([range(1; $s | length) | select($s[.] <= $s[. - 1])] | length > 0)
            | {origin: $l[0], epoch: $l[1], seqs: $s})),
        own_gaps: ([$n.events[] | select(.origin == $n.node)] | group_by(.epoch // "") | map(
                     map(.seq) | sort as $s | select($s != [range(1; ($s | length) + 1)]) )),
        disagreeing_copies: $disagree,
        seq_reused: $seqReused
      }
    | .ok = (.missing == [] and .extra == [] and .doubled_ids == [] and .doubled_seqs == []
             and .out_of_order == [] and .own_gaps == [] and .disagreeing_copies == [] and .seq_reused == [])
  )
