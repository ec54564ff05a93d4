# Forms for index builds arrive with the index issue.
