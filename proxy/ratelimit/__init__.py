"""Rate limits and daily quotas: token buckets in Redis or in process, behind one facade."""
