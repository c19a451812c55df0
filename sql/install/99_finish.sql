-- Last part of the install script: start this database's workers now
-- rather than at the launcher's next safety recheck.
SELECT @extschema@._launcher_wake();
