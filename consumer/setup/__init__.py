"""``setup``: MinIO and Kafka made the way minio-notify.json and the settings say
(provisioning.py: buckets, notifications, lifecycle rules, topics), the identities and
their least-privilege policies (identities.py), the notification config (notify_config.py)
and setup's report (report.py)."""
