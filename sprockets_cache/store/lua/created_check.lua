#!lua
-- Whether this master holds what a create with an Idempotency-Key made in this hash slot, after a
-- write that a WAIT sent behind this script on the same connection counts from (Store._confirm_created).
-- KEYS[1] the slot's marker (keys.created_markers), KEYS[2] where to look, KEYS[3] (optional) the
-- tombstone of a deleted sprocket (keys.key_for_deleted_sprocket)
-- ARGV[1] the marker's lifetime in seconds, ARGV[2] how to look: 'tagged' (KEYS[2] is a hash whose
-- idempotency field, or else KEYS[3], holds the tag ARGV[3]), 'listed' (KEYS[2] is an index, a sorted
-- set, that holds the member ARGV[3]), '' (nothing to look for)
-- Returns 1 when the master holds it, 0 when it does not.
redis.call('SET', KEYS[1], 1, 'EX', ARGV[1])
if ARGV[2] == 'listed' then
  if redis.call('ZSCORE', KEYS[2], ARGV[3]) then return 1 end
  return 0
end
if ARGV[2] == 'tagged' then
  if redis.call('HGET', KEYS[2], 'idempotency') == ARGV[3] then return 1 end
  if KEYS[3] and redis.call('GET', KEYS[3]) == ARGV[3] then return 1 end
  return 0
end
return 1
