-- Readers of the global order (projectors, relay) stop short of the oldest transaction still writing
-- events, found as the oldest in-progress transaction holding a ROW EXCLUSIVE lock on `events` (see
-- eventstore.HORIZON). That is exact only if a transaction locks `events` before it has a
-- transaction id, i.e. when inserting events is the first thing it writes. Enforced here, once per
-- statement: the first INSERT of a transaction into `events` must come before any other write, unless
-- the transaction called events_write_begin() before its first write.
CREATE FUNCTION events_writer_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_current_xact_id_if_assigned() IS NULL THEN
        PERFORM set_config('charter.events_writer', 'on', true);
    ELSIF current_setting('charter.events_writer', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'a transaction must insert into events before writing anything else'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'readers of the global order find event writers by their lock on events';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_writer_order BEFORE INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_writer_order();

-- For a transaction that must write elsewhere (or know its own id) before it inserts events: call this
-- first; it takes the lock readers look for.
CREATE FUNCTION events_write_begin() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF pg_current_xact_id_if_assigned() IS NOT NULL
       AND current_setting('charter.events_writer', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'events_write_begin() must come before the transaction writes anything'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    LOCK TABLE events IN ROW EXCLUSIVE MODE;
    PERFORM set_config('charter.events_writer', 'on', true);
END
$$;
