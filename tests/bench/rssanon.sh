#!/bin/bash
# peak RssAnon (anonymous memory, not the mapped trace) of a command, sampled every 20 ms
"$@" > /dev/null 2>&1 &
pid=$!
peak=0
while kill -0 $pid 2>/dev/null; do
  v=$(awk '/RssAnon/ {print $2}' /proc/$pid/status 2>/dev/null)
  [[ -n $v && $v -gt $peak ]] && peak=$v
  sleep 0.02
done
wait $pid
echo "peak_rss_anon_kb $peak rc $?"
