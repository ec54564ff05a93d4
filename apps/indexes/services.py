# Writes for index builds and deployments arrive with the index issue.
