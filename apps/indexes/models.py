# Index builds and deployments arrive with the index issue; the search process they will live in
# already runs (workers/serving) and this app reports its health.
