-- 004: the writer's admissions and settlements, a run of them per
-- statement (src/store/pg_admit.c). Each decides what spend_reserve and
-- spend_settle (pg_keys.c) decide one at a time, in the order given, under
-- the rows' locks: the requests of one key and day are taken together, so
-- the spend row and this start's mirror row are read once and written once
-- for the run, however many requests of it the batch holds.

-- The fence at the start of every writer transaction: a start that another
-- node reaped (reaped_boots) writes nothing more, since its reservations
-- were settled already. An error, so that it fails the transaction and a
-- COMMIT sent in the same pipeline with it.
CREATE FUNCTION kb_fence(p_node text, p_boot text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM reaped_boots WHERE node_id = p_node AND boot_id = p_boot) THEN
        RAISE EXCEPTION 'this node was found dead by another node, which settled its '
                        'reservations: it writes nothing more (restart it)'
              USING ERRCODE = 'KB001';
    END IF;
END
$$;

-- Admissions of keys without budgets, rate limit or ledger object. For
-- each i: 1 revoked, 2 expired, else 0 when p_amount[i] fits under the
-- committed cap (spent + reserved + amount <= cap; reserved and counted),
-- else 3; remaining is the cap left after it; expires the key's expiry.
CREATE FUNCTION kb_admit(p_seq bigint[], p_day bigint[], p_amount bigint[], p_now bigint,
                         p_node text, p_boot text)
RETURNS TABLE (r_outcome integer, r_remaining bigint, r_expires bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(array_length(p_seq, 1), 0);
    o_out integer[] := array_fill(-1, ARRAY[n]);
    o_rem bigint[] := array_fill(0::bigint, ARRAY[n]);
    o_exp bigint[] := array_fill(0::bigint, ARRAY[n]);
    v_key bigint;
    v_day bigint;
    v_rev boolean;
    v_cap bigint;
    v_exp bigint;
    v_used bigint;
    v_added bigint;
    v_count bigint;
    v_row boolean;
BEGIN
    FOR i IN 1..n LOOP
        CONTINUE WHEN o_out[i] >= 0;
        v_key := p_seq[i];
        v_day := p_day[i];
        SELECT k.revoked_at IS NOT NULL, k.daily_cap_micros, k.expires_at
          INTO v_rev, v_cap, v_exp FROM keys k WHERE k.seq = v_key;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'kb_admit: no key %', v_key;
        END IF;
        SELECT s.spent_micros + s.reserved_micros INTO v_used FROM spend s
         WHERE s.key_seq = v_key AND s.day = v_day FOR UPDATE;
        v_row := FOUND;
        IF NOT v_row THEN
            v_used := 0;
        END IF;
        v_added := 0;
        v_count := 0;
        FOR j IN i..n LOOP
            CONTINUE WHEN p_seq[j] <> v_key OR p_day[j] <> v_day;
            o_exp[j] := v_exp;
            IF v_rev THEN
                o_out[j] := 1;
            ELSIF p_now >= v_exp THEN
                o_out[j] := 2;
            ELSIF v_used + p_amount[j] <= v_cap THEN
                o_out[j] := 0;
                v_used := v_used + p_amount[j];
                v_added := v_added + p_amount[j];
                v_count := v_count + 1;
            ELSE
                o_out[j] := 3;
            END IF;
            o_rem[j] := greatest(v_cap - v_used, 0);
        END LOOP;
        IF v_count > 0 THEN
            IF v_row THEN
                UPDATE spend SET reserved_micros = reserved_micros + v_added,
                                 requests = requests + v_count
                 WHERE key_seq = v_key AND day = v_day;
            ELSE
                -- under the cluster-wide write lock nobody inserts it meanwhile;
                -- were it there, the insert fails the batch, never overshoots
                INSERT INTO spend (key_seq, day, reserved_micros, requests)
                VALUES (v_key, v_day, v_added, v_count);
            END IF;
            IF v_added > 0 THEN
                INSERT INTO node_reservations (node_id, boot_id, key_seq, day, micros)
                VALUES (p_node, p_boot, v_key, v_day, v_added)
                ON CONFLICT (node_id, boot_id, key_seq, day)
                DO UPDATE SET micros = node_reservations.micros + excluded.micros;
            END IF;
        END IF;
    END LOOP;
    RETURN QUERY SELECT o_out[x], o_rem[x], o_exp[x] FROM generate_series(1, n) AS x;
END
$$;

-- Settlements of reservations without budget holds: for each i, the
-- reservation p_reserved[i] is replaced by the cost p_actual[i]. A
-- reservation this start's mirror no longer holds was settled at its worst
-- case by the node that reaped this start: only the cost beyond it is
-- added. The spend row is locked before the mirror row, as everywhere.
CREATE FUNCTION kb_settle(p_seq bigint[], p_day bigint[], p_reserved bigint[],
                          p_actual bigint[], p_node text, p_boot text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(array_length(p_seq, 1), 0);
    done boolean[] := array_fill(false, ARRAY[n]);
    v_key bigint;
    v_day bigint;
    v_held bigint;
    v_held0 bigint;
    v_released bigint;
    v_spent bigint;
    v_r bigint;
BEGIN
    FOR i IN 1..n LOOP
        CONTINUE WHEN done[i];
        v_key := p_seq[i];
        v_day := p_day[i];
        PERFORM 1 FROM spend WHERE key_seq = v_key AND day = v_day FOR UPDATE;
        IF NOT FOUND THEN
            -- nothing was reserved on that day: nothing to settle
            FOR j IN i..n LOOP
                IF p_seq[j] = v_key AND p_day[j] = v_day THEN
                    done[j] := true;
                END IF;
            END LOOP;
            CONTINUE;
        END IF;
        SELECT m.micros INTO v_held FROM node_reservations m
         WHERE m.node_id = p_node AND m.boot_id = p_boot AND m.key_seq = v_key AND m.day = v_day
           FOR UPDATE;
        IF NOT FOUND THEN
            v_held := NULL;
        END IF;
        v_held0 := v_held;
        v_released := 0;
        v_spent := 0;
        FOR j IN i..n LOOP
            CONTINUE WHEN p_seq[j] <> v_key OR p_day[j] <> v_day;
            done[j] := true;
            v_r := p_reserved[j];
            IF v_r = 0 THEN
                v_spent := v_spent + p_actual[j];
            ELSIF v_held IS NOT NULL AND v_held >= v_r THEN
                v_held := v_held - v_r;
                v_released := v_released + v_r;
                v_spent := v_spent + p_actual[j];
            ELSE
                v_spent := v_spent + greatest(p_actual[j] - v_r, 0);
            END IF;
        END LOOP;
        UPDATE spend SET reserved_micros = greatest(reserved_micros - v_released, 0),
                         spent_micros = spent_micros + v_spent
         WHERE key_seq = v_key AND day = v_day;
        IF v_held IS DISTINCT FROM v_held0 THEN
            UPDATE node_reservations SET micros = v_held
             WHERE node_id = p_node AND boot_id = p_boot AND key_seq = v_key AND day = v_day;
        END IF;
    END LOOP;
END
$$;
