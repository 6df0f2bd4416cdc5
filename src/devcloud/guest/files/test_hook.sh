#!/bin/bash
# The example hook of the Bacula OpenStack best-practices document: leaves a trace of freeze and thaw.

case $1 in
freeze)
    echo "I'm frozen" > /tmp/freeze
    ;;
thaw)
    echo "I'm thawed" >> /tmp/freeze
    ;;
*)
    exit 1
    ;;
esac
