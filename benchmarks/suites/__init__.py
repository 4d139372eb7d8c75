"""The suites: each holds only its workloads and clients; the harness runs them.

throughput (aiopop against poplib and ceilings), fetch (``aiopop fetch``
against mpop, fetchmail and getmail6), scale (check_many over many
mailboxes, memory per connection) and login (what a wrong password costs).
"""
