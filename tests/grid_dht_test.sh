#!/usr/bin/env bash
# The DHT between real processes on loopback: 12 `gpugrid offer` providers, each bootstrapped
# from one earlier provider, build routing tables and store each other's signed provider
# records (seen through /metrics); a provider that served a model announces it too; a run
# still works. Usage: tests/grid_dht_test.sh path/to/gpugrid path/to/source
source "$2/tests/lib/loopback_grid.sh" "$@"

n=12
start_provider p0 || exit 1
for i in $(seq 1 $((n - 1))); do
  prev="url_p$(( (i - 1) / 2 ))"
  start_provider "p$i" --peer "${!prev}" || exit 1
done

# A job through p0: it then announces the model as well.
"$bin" run "$model" "$sample" --peer "$url_p0" --data-dir "$tmp/client" -o "$tmp/out.npy" >"$tmp/run.out" 2>"$tmp/run.err" </dev/null
[ $? -eq 0 ] || fail "run on the grid failed: $(cat "$tmp/run.err")"

# Announcements go out on the providers' first ticks once they have a contact; give them time.
total=0 min_contacts=999
for _ in $(seq 1 40); do
  total=0 min_contacts=999
  for i in $(seq 0 $((n - 1))); do
    r="$(metric "p$i" gpugrid_dht_records)"
    c="$(metric "p$i" gpugrid_dht_contacts)"
    total=$((total + ${r:-0}))
    [ "${c:-0}" -lt "$min_contacts" ] && min_contacts=${c:-0}
  done
  # Each provider files 2 records (the general key and its device class; p0 a third, the model)
  # at up to 20 nodes: with 12 nodes, every node holds every record it is close to.
  [ "$total" -ge $((2 * n * 3)) ] && [ "$min_contacts" -ge 3 ] && break
  sleep 0.5
done
echo "dht: $total records stored over $n providers; fewest contacts $min_contacts"
[ "$total" -ge $((2 * n * 3)) ] || fail "only $total provider records stored over $n providers"
[ "$min_contacts" -ge 3 ] || fail "a provider has only $min_contacts DHT contacts"
refused=0
for i in $(seq 0 $((n - 1))); do
  v="$(metric "p$i" gpugrid_dht_refused_total)"
  refused=$((refused + ${v:-0}))
done
echo "dht: $refused messages or records refused (late replies to requests already given up count here)"

[ "$failures" -eq 0 ] && echo "dht over loopback: all checks passed"
exit $((failures > 0))
