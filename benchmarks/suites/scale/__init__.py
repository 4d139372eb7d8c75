"""The scale suite: check_many over many mailboxes, and memory per idle connection."""
